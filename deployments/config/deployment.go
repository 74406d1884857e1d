package config

import (
	"errors"
	"fmt"
	"slices"
)

// originOf is the file that set a top-level key, or every file when none did (the
// key has its default).
func (c *Config) originOf(key string) string {
	if f, ok := c.origins[key]; ok {
		return f
	}
	return c.files
}

// Files lists the files this configuration was loaded from.
func (c *Config) Files() string { return c.files }

// CheckDeployment checks the configurations of a deployment's processes together,
// each loaded (and so valid) on its own: no two processes are one instance, every
// process names the same stream writers (they route by them, and a difference forks
// a room's writer), every stream writer is one of the processes, and some listener
// takes the front door's client requests.
func CheckDeployment(procs []*Config) error {
	var errs []error
	byName := map[string]*Config{}
	for _, c := range procs {
		name := c.InstanceName()
		if other, ok := byName[name]; ok {
			errs = append(errs, &Error{File: c.originOf("worker_name"), Key: "worker_name",
				Reason: fmt.Sprintf("instance %q is also the process of %s", name, other.files)})
			continue
		}
		byName[name] = c
	}
	if len(procs) == 0 {
		return nil
	}
	first := procs[0]
	want := first.StreamWriters.streams()
	for _, c := range procs[1:] {
		for i, s := range c.StreamWriters.streams() {
			if !slices.Equal(*s.writers, *want[i].writers) {
				errs = append(errs, &Error{File: c.originOf("stream_writers"), Key: "stream_writers." + s.name,
					Reason: fmt.Sprintf("%v, where %s has %v: every process must name the same writers", *s.writers, first.files, *want[i].writers)})
			}
		}
	}
	for _, s := range want {
		for _, w := range *s.writers {
			if _, ok := byName[w]; !ok {
				errs = append(errs, &Error{File: first.originOf("stream_writers"), Key: "stream_writers." + s.name,
					Reason: fmt.Sprintf("%s is none of the deployment's processes", w)})
			}
		}
	}
	if bg := first.BackgroundTasksOn(); byName[bg] == nil {
		errs = append(errs, &Error{File: first.originOf("run_background_tasks_on"), Key: "run_background_tasks_on",
			Reason: fmt.Sprintf("%s is none of the deployment's processes: nobody would run the background tasks", bg)})
	}
	if _, err := Routes(procs); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
