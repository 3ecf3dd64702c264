// Command evalflow-pause is the pod sandbox of evalflow's node (devkit/node): it holds
// the pod's namespaces and waits for SIGTERM or SIGINT. Built static (CGO_ENABLED=0).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
