package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/ganglionhq/ganglion/deployments/config"
	"github.com/ganglionhq/ganglion/gateway/frontdoor"
	"github.com/ganglionhq/ganglion/gateway/serve"
)

// loadDeployment loads the configuration of each process of a deployment, given as
// groups of -c files separated by -- (`-c shared.yaml -- -c shared.yaml -c
// gateway1.yaml -- ...`), or as the first group and -workers DIR, each *.yaml file of
// which but the first group's own is a worker's file read after the first group's
// (Synapse's layout of /etc/matrix-synapse/workers). fs holds the command's own flags, which come before the
// first group's files. The error is a file's; check is the result of checking them
// together (config.CheckDeployment).
func loadDeployment(fs *flag.FlagSet, args []string) (procs []*config.Config, check, err error) {
	workers := fs.String("workers", "", "a directory whose *.yaml files are each a worker's, read after the first -c files")
	groups := [][]string{nil}
	for _, a := range args {
		if a == "--" {
			groups = append(groups, nil)
			continue
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], a)
	}
	var files [][]string
	for i := range groups {
		if i > 0 {
			fs = flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
		}
		var group fileList
		fs.Var(&group, "c", "configuration file (repeatable)")
		if err := fs.Parse(groups[i]); err != nil {
			return nil, nil, err
		}
		if len(group) == 0 {
			return nil, nil, fmt.Errorf("process %d: at least one -c FILE is required", i+1)
		}
		files = append(files, group)
		if i == 0 && *workers != "" {
			found, err := filepath.Glob(filepath.Join(*workers, "*.yaml"))
			if err != nil || len(found) == 0 {
				return nil, nil, fmt.Errorf("-workers %s: no .yaml files", *workers)
			}
			for _, f := range found {
				if !slices.ContainsFunc(group, func(g string) bool { return sameFile(g, f) }) {
					files = append(files, append(slices.Clip(group), f))
				}
			}
		}
	}
	for _, group := range files {
		c, err := config.Load(group, newLogger(zapcore.InfoLevel))
		if err != nil {
			return nil, nil, err
		}
		procs = append(procs, c)
	}
	return procs, config.CheckDeployment(procs), nil
}

// sameFile reports whether two paths name one file.
func sameFile(a, b string) bool {
	ia, errA := os.Stat(a)
	ib, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(ia, ib)
}

// checkConfigCmd checks a deployment's configuration (loadDeployment).
func checkConfigCmd(args []string) error {
	procs, check, err := loadDeployment(flag.NewFlagSet("check-config", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	if check != nil {
		return check
	}
	var names []string
	for _, c := range procs {
		names = append(names, c.InstanceName())
	}
	fmt.Printf("ok: %d processes (%s)\n", len(procs), strings.Join(names, ", "))
	return nil
}

// deploymentRoutes loads a deployment (loadDeployment) and returns its routing table.
// What the deployment's check finds is logged, not refused: a front door may be put in
// front of part of a deployment.
func deploymentRoutes(fs *flag.FlagSet, args []string, log *zap.Logger) ([]*config.Config, frontdoor.Table, error) {
	procs, check, err := loadDeployment(fs, args)
	if err != nil {
		return nil, nil, err
	}
	if check != nil {
		log.Warn("the deployment's files do not check as a whole (ganglion check-config)", zap.Error(check))
	}
	table, err := config.Routes(procs)
	return procs, table, err
}

// frontDoorFlags are the front door's own flags; the deployment's files follow.
func frontDoorFlags() (fs *flag.FlagSet, listen *string, perIP *int) {
	fs = flag.NewFlagSet("frontdoor", flag.ContinueOnError)
	listen = fs.String("listen", "127.0.0.1:8008", "address to serve on")
	perIP = fs.Int("max-connections-per-ip", serve.DefaultLimits.MaxConnsPerIP, "open connections one client IP may hold (0: no cap)")
	return fs, listen, perIP
}

// frontDoorCmd runs the routing reverse proxy in front of a deployment's processes.
func frontDoorCmd(args []string) error {
	fs, listen, perIP := frontDoorFlags()
	log := newLogger(zapcore.InfoLevel)
	_, table, err := deploymentRoutes(fs, args, log)
	if err != nil {
		return err
	}
	limits := serve.DefaultLimits
	limits.MaxConnsPerIP = *perIP
	rt, err := frontdoor.New(table, frontdoor.Options{Limits: limits, Log: log})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := serve.Listen(*listen, limits.MaxConnsPerIP, log)
	if err != nil {
		return err
	}
	complete, _ := table.Complete()
	fields := []zap.Field{zap.String("addr", ln.Addr().String())}
	for _, g := range frontdoor.Groups {
		var names []string
		for _, u := range complete[g] {
			names = append(names, u.Name)
		}
		fields = append(fields, zap.Strings(string(g), names))
	}
	log.Info("front door listening", fields...)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveUntilDone(ctx, serve.New(rt, limits, log), ln) })
	g.Go(func() error { rt.Run(ctx); return nil })
	g.Go(func() error { reloadOnHangup(ctx, args, rt, log); return nil })
	g.Go(logShutdown(ctx, log))
	err = g.Wait()
	logStopped(ctx, log)
	return err
}

// reloadOnHangup reads the deployment's files again at each SIGHUP, as nginx does on a
// reload, and routes by them from then on: a sync worker or gateway started with its
// own file (in the -workers directory) takes requests without a restart. Files that
// do not load leave the routing as it was.
func reloadOnHangup(ctx context.Context, args []string, rt *frontdoor.Router, log *zap.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		fs, _, _ := frontDoorFlags()
		_, table, err := deploymentRoutes(fs, args, log)
		var added, removed []string
		if err == nil {
			added, removed, err = rt.Reload(table)
		}
		if err != nil {
			log.Error("reload refused; routing as before", zap.Error(err))
			continue
		}
		log.Info("reloaded the deployment's files", zap.Strings("added", added), zap.Strings("removed", removed))
	}
}

// generateNginxCmd writes the nginx configuration equivalent to the front door.
func generateNginxCmd(args []string) error {
	fs := flag.NewFlagSet("generate-nginx", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8008", "the address nginx listens on")
	out := fs.String("o", "", "file to write (default: standard output)")
	procs, table, err := deploymentRoutes(fs, args, newLogger(zapcore.InfoLevel))
	if err != nil {
		return err
	}
	var files []string
	for _, c := range procs {
		files = append(files, c.Files())
	}
	o := frontdoor.NginxOptions{Listen: *listen, MaxBodySize: procs[0].Media.MaxUploadSize,
		Source: strings.Join(files, "; ")}
	if *out == "" {
		return frontdoor.WriteNginx(os.Stdout, table, o)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := frontdoor.WriteNginx(f, table, o); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
