// Command coredns is CoreDNS with only the plugins the real test node needs: the cluster zone from the
// API server, plus health and readiness endpoints. Upstream's main package links every plugin, and
// with them every cloud SDK; this one builds in a fraction of the time. There is deliberately no
// `forward` plugin: test pods must not reach any resolver outside this machine.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
