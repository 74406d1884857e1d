package e2e

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// `ganglion consumer rewind` makes a running consumer of the events log process it
// again. The user directory, whose tables were lost, is rebuilt from the start of the
// log to exactly what it was; the pusher, whose processing sends pushes, is rewound
// only with -yes; a consumer that is not the log's is refused.
func TestConsumerRewind(t *testing.T) {
	ctx, d, hs := mainProcess(t, deploymentOptions{externalNATS: true})
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	carol := newUser(ctx, t, hs.url(), "carol")
	createRoomWith(ctx, t, alice, "public_chat", bob)
	createRoomWith(ctx, t, bob, "private_chat", carol)

	directory := func() string {
		var out strings.Builder
		d.query(ctx, func(conn *pgx.Conn) error {
			for _, q := range []string{
				`SELECT user_id || ' ' || coalesce(display_name, '') || ' ' || in_public_room FROM user_directory ORDER BY 1`,
				`SELECT user_id || ' ' || room_id FROM user_directory_rooms ORDER BY 1`,
				`SELECT room_id || ' ' || public_join || ' ' || world_readable FROM user_directory_rooms_public ORDER BY 1`,
			} {
				rows, err := conn.Query(ctx, q)
				if err != nil {
					return err
				}
				for rows.Next() {
					var line string
					if err := rows.Scan(&line); err != nil {
						return err
					}
					fmt.Fprintln(&out, line)
				}
				if err := rows.Err(); err != nil {
					return err
				}
			}
			return nil
		})
		return out.String()
	}
	// The directory follows the log: wait until it has both rooms' members.
	var before string
	eventually(t, "the directory to hold both rooms", func() error {
		before = directory()
		if strings.Count(before, "\n") < 3+4+1 {
			return fmt.Errorf("directory:\n%s", before)
		}
		return nil
	})

	rewind := func(args ...string) (string, error) {
		all := append([]string{"consumer", "rewind", "-c", hs.files[0]}, args...)
		out, err := exec.CommandContext(ctx, ganglionBin, all...).CombinedOutput()
		return string(out), err
	}

	// The directory's tables are lost; a rewind to the log's start rebuilds them.
	d.query(ctx, func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `DELETE FROM user_directory_rooms_public; DELETE FROM user_directory_rooms; DELETE FROM user_directory`)
		return err
	})
	if got := directory(); got != "" {
		t.Fatalf("the directory was not emptied: %s", got)
	}
	out, err := rewind("-to-seq", "1", "user_directory_master")
	if err != nil || !strings.Contains(out, "rewound") {
		t.Fatalf("rewind: %v\n%s", err, out)
	}
	eventually(t, "the rebuilt directory to equal the lost one", func() error {
		if got := directory(); got != before {
			return fmt.Errorf("got\n%s\nwant\n%s", got, before)
		}
		return nil
	})
	// A rewind by time works the same.
	if out, err := rewind("-since", "1h", "user_directory_master"); err != nil || !strings.Contains(out, "rewound") {
		t.Fatalf("rewind -since: %v\n%s", err, out)
	}

	// The pusher's processing sends pushes: without -yes, nothing happens.
	out, err = rewind("-to-seq", "1", "pusher_master")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(out, "run again with -yes") {
		t.Fatalf("pusher rewind without -yes: %v\n%s", err, out)
	}
	if out, err := rewind("-to-seq", "1", "-yes", "pusher_master"); err != nil || !strings.Contains(out, "rewound") {
		t.Fatalf("pusher rewind with -yes: %v\n%s", err, out)
	}

	// The event writer's intents consumer is not the log's, and nobody runs "nobody".
	for _, name := range []string{"persister_master", "nobody"} {
		if out, err := rewind("-to-seq", "1", name); err == nil || !strings.Contains(out, "has no consumer") {
			t.Errorf("rewind of %s: %v\n%s", name, err, out)
		}
	}
}
