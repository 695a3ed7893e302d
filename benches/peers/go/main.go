// The Go side of the peer comparison: golang.org/x/sync/singleflight on the
// same workloads as benches/peers/main.rs. Prints one "name=value" line.
//
// Built by benches/peers/main.rs with GO111MODULE=off and
// GOPATH=<dir>:/usr/share/gocode (Debian's golang-golang-x-sync-dev).
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

func keys(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%skey:%d", prefix, i)
	}
	return out
}

var trivial = func() (interface{}, error) { return uint64(1), nil }

// W1: one goroutine, 4096 distinct keys, trivial function.
func w1(calls int) {
	var g singleflight.Group
	ks := keys("", 4096)
	for i := 0; i < 100000; i++ {
		g.Do(ks[i&4095], trivial)
	}
	start := time.Now()
	for i := 0; i < calls; i++ {
		g.Do(ks[i&4095], trivial)
	}
	fmt.Printf("ns_per_call=%.2f\n", float64(time.Since(start).Nanoseconds())/float64(calls))
}

// W2: two goroutines, 2048 keys each, disjoint.
func w2(calls int) {
	var g singleflight.Group
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	ready.Add(2)
	startGate := make(chan struct{})
	for t := 0; t < 2; t++ {
		ks := keys(fmt.Sprintf("t%d:", t), 2048)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50000; i++ {
				g.Do(ks[i&2047], trivial)
			}
			ready.Done()
			<-startGate
			for i := 0; i < calls/2; i++ {
				g.Do(ks[i&2047], trivial)
			}
		}()
	}
	ready.Wait()
	start := time.Now()
	close(startGate)
	wg.Wait()
	fmt.Printf("ns_per_call=%.2f\n", float64(time.Since(start).Nanoseconds())/float64(calls))
}

// W3/W4: 64 goroutines loop on one key for a while.
func hot(threads int, seconds float64, fn func()) {
	var g singleflight.Group
	var calls, executions atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	work := func() (interface{}, error) {
		executions.Add(1)
		fn()
		return uint64(1), nil
	}
	start := time.Now()
	for t := 0; t < threads; t++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				g.Do("hot", work)
				calls.Add(1)
			}
		}()
	}
	time.Sleep(time.Duration(seconds * float64(time.Second)))
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	fmt.Printf("calls_per_sec=%.1f executions=%d calls=%d\n",
		float64(calls.Load())/elapsed, executions.Load(), calls.Load())
}

func spin(d time.Duration) func() {
	return func() {
		start := time.Now()
		for time.Since(start) < d {
		}
	}
}

// Wake latency: the time from the leader's function returning to the last
// follower's Do returning, over many flights.
func latency(followers, rounds int) {
	var g singleflight.Group
	samples := make([]float64, 0, rounds)
	for r := 0; r < rounds; r++ {
		var arrived, done sync.WaitGroup
		arrived.Add(followers)
		done.Add(followers)
		var leaderReturned int64
		ends := make([]int64, followers)
		leaderIn := make(chan struct{})
		go g.Do("k", func() (interface{}, error) {
			close(leaderIn)
			arrived.Wait()
			time.Sleep(2 * time.Millisecond) // let the followers park
			atomic.StoreInt64(&leaderReturned, time.Now().UnixNano())
			return uint64(1), nil
		})
		<-leaderIn
		for f := 0; f < followers; f++ {
			go func(f int) {
				arrived.Done()
				g.Do("k", trivial)
				ends[f] = time.Now().UnixNano()
				done.Done()
			}(f)
		}
		done.Wait()
		last := int64(0)
		for _, e := range ends {
			if e > last {
				last = e
			}
		}
		samples = append(samples, float64(last-atomic.LoadInt64(&leaderReturned))/1000.0)
	}
	sort.Float64s(samples)
	p := func(q float64) float64 { return samples[int(q*float64(len(samples)-1))] }
	fmt.Printf("p50_us=%.2f p99_us=%.2f\n", p(0.5), p(0.99))
}

// Memory: heap allocations per uncontended call, and heap bytes held per
// in-flight key (measured by nesting calls on distinct keys).
func memory() {
	var g singleflight.Group
	ks := keys("", 4096)
	for i := 0; i < 10000; i++ {
		g.Do(ks[i&4095], trivial)
	}
	debug.SetGCPercent(-1)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const calls = 100000
	for i := 0; i < calls; i++ {
		g.Do(ks[i&4095], trivial)
	}
	runtime.ReadMemStats(&after)
	allocs := float64(after.Mallocs-before.Mallocs) / calls

	const depth = 1000
	var held float64
	var nest func(level int)
	nest = func(level int) {
		if level == depth {
			var inside runtime.MemStats
			runtime.ReadMemStats(&inside)
			held = float64(inside.HeapAlloc-before.HeapAlloc) / depth
			return
		}
		g.Do(ks[level], func() (interface{}, error) { nest(level + 1); return uint64(1), nil })
	}
	runtime.ReadMemStats(&before)
	nest(0)
	fmt.Printf("allocs_per_call=%.2f bytes_per_inflight_key=%.1f\n", allocs, held)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go-singleflight w1|w2|w3|w4|latency8|latency64|memory [scale]")
		os.Exit(2)
	}
	scale := 1.0
	if len(os.Args) > 2 {
		scale, _ = strconv.ParseFloat(os.Args[2], 64)
	}
	switch os.Args[1] {
	case "w1":
		w1(int(2000000 * scale))
	case "w2":
		w2(int(2000000 * scale))
	case "w3":
		hot(64, 1.5*scale, spin(100*time.Microsecond))
	case "w4":
		hot(64, 1.5*scale, func() { time.Sleep(time.Millisecond) })
	case "latency8":
		latency(8, int(200*scale))
	case "latency64":
		latency(64, int(200*scale))
	case "memory":
		memory()
	default:
		fmt.Fprintln(os.Stderr, "unknown workload", os.Args[1])
		os.Exit(2)
	}
}
