package config

import "gopkg.in/yaml.v3"

// UserDirectory is Synapse's user_directory section.
type UserDirectory struct {
	// Enabled (default true) keeps the directory; off, searches find nobody.
	Enabled bool
	// SearchAllUsers widens searches from users sharing a room with the searcher or in
	// public rooms to every user in the directory.
	SearchAllUsers bool
}

func (l *loader) userDirectory(dst *UserDirectory, n *yaml.Node, path string) {
	l.object(n, path, fields{
		"enabled": func(v *yaml.Node, p string) {
			if b, ok := l.boolean(v, p); ok {
				dst.Enabled = b
			}
		},
		"search_all_users": func(v *yaml.Node, p string) {
			if b, ok := l.boolean(v, p); ok {
				dst.SearchAllUsers = b
			}
		},
	})
}

// UserDirectoryUpdater names the instance keeping the user directory, with Synapse's
// rules: update_user_directory_from_worker when set, else the main process; "" when
// user_directory.enabled is false.
func (c *Config) UserDirectoryUpdater() string {
	switch {
	case !c.UserDirectory.Enabled:
		return ""
	case c.UpdateUserDirectoryFromWorker != "":
		return c.UpdateUserDirectoryFromWorker
	}
	return MainInstance
}
