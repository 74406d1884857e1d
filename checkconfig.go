package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/ganglionhq/ganglion/deployments/config"
)

// checkConfigCmd loads the configuration of each process of a deployment (groups of
// -c files separated by --) and checks them together: `ganglion check-config -c
// shared.yaml -- -c shared.yaml -c gateway1.yaml -- ...`.
func checkConfigCmd(args []string) error {
	groups := [][]string{nil}
	for _, a := range args {
		if a == "--" {
			groups = append(groups, nil)
			continue
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], a)
	}
	var procs []*config.Config
	var names []string
	for _, group := range groups {
		c, err := loadConfig(flag.NewFlagSet("check-config", flag.ContinueOnError), group)
		if err != nil {
			return err
		}
		procs = append(procs, c)
		names = append(names, c.InstanceName())
	}
	if err := config.CheckDeployment(procs); err != nil {
		return err
	}
	fmt.Printf("ok: %d processes (%s)\n", len(procs), strings.Join(names, ", "))
	return nil
}
