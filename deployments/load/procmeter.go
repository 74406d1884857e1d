package load

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Machine-wide CPU (cpuSample) counts whatever else runs on the machine, and on a shared
// development machine that can be a test suite using a whole core. The meter below counts
// only the processes a measurement involves: this program, the processes listed by pid
// (the server, an external NATS), and the Postgres backends of the named databases plus
// Postgres's own writer processes.
type meter struct {
	pids []int
	// pg lists Postgres backends; nil when Postgres is not counted.
	pg  *pgx.Conn
	dbs []string
}

// meterSample is the CPU time of each counted process at one moment.
type meterSample struct {
	self  time.Duration
	procs map[int]time.Duration
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is a process's user and system time (all its threads) from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) is in parentheses and may hold spaces; fields after it
	// start at state (field 3). utime and stime are fields 14 and 15.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+st) * time.Second / userHZ, true
}

// pgPIDs lists the backends connected to the meter's databases and Postgres's shared
// writer processes, whose work (WAL flushes, checkpoints) our writes cause.
func (m *meter) pgPIDs(ctx context.Context) []int {
	if m.pg == nil {
		return nil
	}
	rows, err := m.pg.Query(ctx, `SELECT pid FROM pg_stat_activity
		WHERE datname = ANY($1) OR backend_type IN ('walwriter', 'checkpointer', 'background writer')`, m.dbs)
	if err != nil {
		return nil
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil
	}
	out := make([]int, len(pids))
	for i, p := range pids {
		out[i] = int(p)
	}
	return out
}

func (m *meter) sample(ctx context.Context) meterSample {
	s := meterSample{self: selfCPU(), procs: map[int]time.Duration{}}
	for _, pid := range append(append([]int(nil), m.pids...), m.pgPIDs(ctx)...) {
		if c, ok := procCPU(pid); ok {
			s.procs[pid] = c
		}
	}
	return s
}

// since is the CPU the counted processes used after start. A Postgres backend that
// appeared in between counts whole; one that ended in between is lost.
func (m *meter) since(ctx context.Context, start meterSample) time.Duration {
	end := m.sample(ctx)
	total := end.self - start.self
	for pid, c := range end.procs {
		total += c - start.procs[pid]
	}
	return total
}

// listenerPID finds the process listening on a TCP port of this machine, through
// /proc/net/tcp{,6} and the socket links under /proc/<pid>/fd (readable as root or as
// the process's owner). It returns 0 when none is found.
func listenerPID(port int) int {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
				continue
			}
			colon := strings.LastIndexByte(fs[1], ':')
			p, err := strconv.ParseUint(fs[1][colon+1:], 16, 32)
			if err == nil && int(p) == port {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
		fh.Close()
	}
	if len(inodes) == 0 {
		return 0
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		link, err := os.Readlink(fd)
		if err != nil || !inodes[link] {
			continue
		}
		pid, err := strconv.Atoi(strings.Split(fd, "/")[2])
		if err == nil {
			return pid
		}
	}
	return 0
}

// describe says what the meter counts, for the report.
func (m *meter) describe(ctx context.Context) string {
	parts := []string{"this program"}
	for _, p := range m.pids {
		parts = append(parts, fmt.Sprintf("pid %d", p))
	}
	if m.pg != nil {
		parts = append(parts, fmt.Sprintf("Postgres backends of %s and its writer processes (%d processes now)", strings.Join(m.dbs, ", "), len(m.pgPIDs(ctx))))
	}
	return strings.Join(parts, ", ")
}
