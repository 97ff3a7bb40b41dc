// client-go-election is the baseline for `make bench-failover`: client-go's
// own leader election (tools/leaderelection, the code behind
// kube-controller-manager and controller-runtime) with ReleaseOnCancel, run
// with the same flags and activity log as `leasehold run`, so both are
// measured by one benchmark in one run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "run" {
		fmt.Fprintln(os.Stderr, "usage: client-go-election run [flags]")
		os.Exit(2)
	}
	flags := flag.NewFlagSet("run", flag.ExitOnError)
	identity := flags.String("identity", "", "identity in the Lease")
	namespace := flags.String("lease-namespace", "default", "namespace of the Lease")
	name := flags.String("lease-name", "leasehold", "name of the Lease")
	leaseDuration := flags.Duration("lease-duration", 15*time.Second, "lease duration")
	renewDeadline := flags.Duration("renew-deadline", 10*time.Second, "renew deadline")
	retryPeriod := flags.Duration("retry-period", 2*time.Second, "retry period")
	activityLog := flags.String("activity-log", "", "file to append '<term> <unix-micros>' to while leading")
	flags.String("listen", "", "ignored (leasehold serves an API; the baseline does not)")
	flags.String("plugin-namespace", "", "ignored (leasehold runs plugins; the baseline runs none)")
	_ = flags.Parse(os.Args[2:])

	config, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeconfig:", err)
		os.Exit(1)
	}
	client := kubernetes.NewForConfigOrDie(config)
	log, err := os.OpenFile(*activityLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "activity log:", err)
		os.Exit(1)
	}

	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	go func() { <-signals; cancel() }()

	term := 0
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: *namespace, Name: *name},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: *identity},
		},
		LeaseDuration:   *leaseDuration,
		RenewDeadline:   *renewDeadline,
		RetryPeriod:     *retryPeriod,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				term++
				for ctx.Err() == nil {
					fmt.Fprintf(log, "%d %d\n", term, time.Now().UnixMicro())
					select {
					case <-ctx.Done():
					case <-time.After(10 * time.Millisecond):
					}
				}
			},
			OnStoppedLeading: func() {},
		},
	})
}
