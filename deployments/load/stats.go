package load

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// percentile returns the q-quantile (0 < q <= 1) of ds by the nearest-rank method, or 0
// when ds is empty. ds is not modified.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// userHZ is the unit of /proc/stat's counters. It is fixed at 100 in Linux's ABI,
// whatever the kernel's internal tick rate.
const userHZ = 100

// cpuSample is the machine's CPU time so far, all cores and all processes, from
// /proc/stat. Machine-wide is the point: the server, its embedded NATS, Postgres and this
// load generator all count, which is what a send costs the machine.
type cpuSample struct {
	busy, total uint64 // in 1/userHZ seconds
	ok          bool
}

func readCPU() cpuSample {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}
	}
	return parseCPU(data)
}

// parseCPU reads the aggregate "cpu" line of /proc/stat: user nice system idle iowait
// irq softirq steal ...; idle and iowait are the time nothing ran.
func parseCPU(data []byte) cpuSample {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[0] != "cpu" {
			continue
		}
		var s cpuSample
		for i, v := range f[1:] {
			if i >= 8 { // guest time is already counted in user
				break
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return cpuSample{}
			}
			s.total += n
			if i != 3 && i != 4 {
				s.busy += n
			}
		}
		s.ok = true
		return s
	}
	return cpuSample{}
}

// cpuSince is the machine CPU time spent since start.
func cpuSince(start cpuSample) time.Duration {
	end := readCPU()
	if !start.ok || !end.ok {
		return 0
	}
	return time.Duration(end.busy-start.busy) * time.Second / userHZ
}

// backgroundCores measures how many cores are busy while this program waits, to warn
// when something else on the machine would distort the figures.
func backgroundCores(d time.Duration) float64 {
	start := readCPU()
	time.Sleep(d)
	end := readCPU()
	if !start.ok || !end.ok || end.total == start.total {
		return 0
	}
	return float64(end.busy-start.busy) / float64(end.total-start.total) * float64(runtime.NumCPU())
}

// result is one measured figure.
type result struct {
	name     string
	ops      int
	elapsed  time.Duration
	cpu      time.Duration   // machine CPU over the run; 0 when unknown
	lat      []time.Duration // per-op latencies, when measured
	failures int
}

func (r result) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// cpuPerOp is the machine CPU time one operation cost, or 0 when unknown.
func (r result) cpuPerOp() time.Duration {
	if r.ops == 0 || r.cpu == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.ops)
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
}
