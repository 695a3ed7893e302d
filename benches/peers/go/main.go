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
	"strings"
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

// W3/W4/W5/scaling: goroutines loop on hot keys for a while, goroutine t on
// key t % keys.
func hot(threads, nkeys int, seconds float64, fn func()) {
	var g singleflight.Group
	var calls, executions atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	work := func() (interface{}, error) {
		executions.Add(1)
		fn()
		return uint64(1), nil
	}
	names := []string{"hot"}
	if nkeys > 1 {
		names = keys("hot:", nkeys)
	}
	start := time.Now()
	for t := 0; t < threads; t++ {
		wg.Add(1)
		key := names[t%nkeys]
		go func() {
			defer wg.Done()
			for !stop.Load() {
				g.Do(key, work)
				calls.Add(1)
			}
		}()
	}
	time.Sleep(time.Duration(seconds * float64(time.Second)))
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	fmt.Printf("calls_per_sec=%.1f executions=%d executions_per_sec=%.1f calls=%d\n",
		float64(calls.Load())/elapsed, executions.Load(),
		float64(executions.Load())/elapsed, calls.Load())
}

// W6: goroutines whose every 10th call goes to one hot key (100 us spin) and
// the others to their own 1024 keys (trivial function); every 8th
// distinct-key call is timed.
func mixed(threads int, seconds float64) {
	var g singleflight.Group
	var distinctCalls, hotCalls atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	var samples []float64
	hotWork := func() (interface{}, error) {
		spin(100 * time.Microsecond)()
		return uint64(1), nil
	}
	start := time.Now()
	for t := 0; t < threads; t++ {
		wg.Add(1)
		ks := keys(fmt.Sprintf("t%d:", t), 1024)
		go func(t int) {
			defer wg.Done()
			var distinct, hot int64
			var sampled []float64
			i := t
			for !stop.Load() {
				i++
				if i%10 == 0 {
					g.Do("hot", hotWork)
					hot++
				} else if i%8 == 1 {
					begin := time.Now()
					g.Do(ks[i&1023], trivial)
					sampled = append(sampled, float64(time.Since(begin).Nanoseconds()))
					distinct++
				} else {
					g.Do(ks[i&1023], trivial)
					distinct++
				}
			}
			distinctCalls.Add(distinct)
			hotCalls.Add(hot)
			mu.Lock()
			samples = append(samples, sampled...)
			mu.Unlock()
		}(t)
	}
	time.Sleep(time.Duration(seconds * float64(time.Second)))
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	sort.Float64s(samples)
	p := func(q float64) float64 { return samples[int(q*float64(len(samples)-1))] }
	fmt.Printf("distinct_calls_per_sec=%.1f distinct_p50_ns=%.1f distinct_p99_ns=%.1f hot_calls_per_sec=%.1f\n",
		float64(distinctCalls.Load())/elapsed, p(0.5), p(0.99), float64(hotCalls.Load())/elapsed)
}

func spin(d time.Duration) func() {
	return func() {
		start := time.Now()
		for time.Since(start) < d {
		}
	}
}

// Wake latency: the time from the leader's function returning to the last
// follower's Do returning, over many flights. With hold, every follower stays
// alive until all have returned (the pure wake).
func latency(followers, rounds int, hold bool) {
	var g singleflight.Group
	samples := make([]float64, 0, rounds)
	for r := 0; r < rounds; r++ {
		var arrived, done, returned sync.WaitGroup
		arrived.Add(followers)
		done.Add(followers)
		returned.Add(followers)
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
				if hold {
					returned.Done()
					returned.Wait()
				}
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

func sleep1ms() { time.Sleep(time.Millisecond) }

// Flights per wake-latency sample set, as in the Rust harness.
func flights(scale float64) int {
	if n := int(100 * scale); n > 1 {
		return n
	}
	return 1
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go-singleflight w1|w2|w3|w4|w5|w6|latency8|latency64|pure8|pure64|memory|scaleN [scale]")
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
		hot(64, 1, scale, spin(100*time.Microsecond))
	case "w4":
		hot(64, 1, scale, sleep1ms)
	case "w5":
		hot(64, 8, scale, spin(100*time.Microsecond))
	case "w6":
		mixed(8, scale)
	case "latency8":
		latency(8, flights(scale), false)
	case "latency64":
		latency(64, flights(scale), false)
	case "pure8":
		latency(8, flights(scale), true)
	case "pure64":
		latency(64, flights(scale), true)
	case "memory":
		memory()
	default:
		if threads, err := strconv.Atoi(strings.TrimPrefix(os.Args[1], "scale")); err == nil && strings.HasPrefix(os.Args[1], "scale") {
			hot(threads, 1, 0.3*scale, sleep1ms)
			return
		}
		fmt.Fprintln(os.Stderr, "unknown workload", os.Args[1])
		os.Exit(2)
	}
}
