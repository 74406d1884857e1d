package pgtest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Server is a Postgres cluster of one test's own, on a free loopback port, for fault
// tests that stop and start the database without disturbing the machine's.
type Server struct {
	bin, dir string
	port     int
	// owner runs the server when the test runs as root, which Postgres refuses.
	owner *user.User
}

// StartServer creates a cluster in a new directory and starts it; it is stopped and
// removed when the test ends. It needs Postgres's server binaries (Debian's
// postgresql package), and the postgres account when the test runs as root.
func StartServer(t testing.TB) *Server {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		t.Fatal("pgtest: no Postgres server binaries under /usr/lib/postgresql (apt-get install postgresql)")
	}
	sort.Strings(bins)
	s := &Server{bin: filepath.Dir(bins[len(bins)-1])}
	dir, err := os.MkdirTemp("", "ganglion-pg-")
	if err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		if s.owner, err = user.Lookup("postgres"); err != nil {
			t.Fatalf("pgtest: running as root needs the postgres account: %v", err)
		}
		uid, _ := strconv.Atoi(s.owner.Uid)
		gid, _ := strconv.Atoi(s.owner.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	s.port = FreePort(t)
	s.run(t, "initdb", "-D", s.data(), "-U", "postgres", "-A", "trust", "--no-sync")
	s.Start(t)
	t.Cleanup(func() { _ = s.cmd("pg_ctl", "-D", s.data(), "-m", "immediate", "-w", "stop").Run() })
	return s
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

// DSN is the server's postgres database.
func (s *Server) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Start starts the stopped server on its port and waits until it accepts connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s -c fsync=off", s.port, s.dir)
	s.run(t, "pg_ctl", "-D", s.data(), "-l", filepath.Join(s.dir, "log"), "-o", opts, "-w", "start")
}

// Stop shuts the server down as an operator's restart does (fast: open connections
// are cut, nothing committed is lost).
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.run(t, "pg_ctl", "-D", s.data(), "-m", "fast", "-w", "stop")
}

// Pause freezes the server and every backend (SIGSTOP), as a hung database: its
// connections stay open and nothing answers until Resume.
func (s *Server) Pause(t testing.TB) { s.signal(t, syscall.SIGSTOP) }

// Resume lets a paused server go on (SIGCONT).
func (s *Server) Resume(t testing.TB) { s.signal(t, syscall.SIGCONT) }

// signal sends sig to the postmaster, then to its children (stopped first, it forks
// no backend the scan below would miss).
func (s *Server) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	pidFile, err := os.ReadFile(filepath.Join(s.data(), "postmaster.pid"))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	master, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(pidFile), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("pgtest: postmaster.pid: %v", err)
	}
	_ = syscall.Kill(master, sig)
	var children []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		stat, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after its ')'.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(master) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
			children = append(children, pid)
		}
	}
	for _, pid := range children {
		_ = syscall.Kill(pid, sig)
	}
}

func (s *Server) cmd(name string, args ...string) *exec.Cmd {
	path := filepath.Join(s.bin, name)
	if s.owner != nil {
		return exec.Command("runuser", append([]string{"-u", s.owner.Username, "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

func (s *Server) run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := s.cmd(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("pgtest: %s: %v\n%s", name, err, out)
	}
}

// FreePort returns a port for a process to listen on, picked below Linux's ephemeral
// range (32768–60999). A port the kernel hands out for ":0" comes from that range, and
// in the moment between closing it and the process binding it, an outgoing connection
// of a parallel test (to NATS, Postgres) could take it as its local port.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			_ = l.Close()
			return port
		}
	}
	t.Fatal("pgtest: no free port below the ephemeral range")
	return 0
}
