// Command evalflow-modproxy writes a file-based Go module proxy (GOPROXY=file://DIR)
// serving evalflow's own modules at one version, so that a function's directory builds
// alone — as the func CLI's builders see it, without the replace directives that point
// at ../../shared in the checkout:
//
//	evalflow-modproxy -out .state/modproxy -version v0.0.0 shared localjob devkit
//
// Each module is zipped from its directory under the checkout (golang.org/x/mod/zip,
// the go command's own format), with its go.mod, .info and list files.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/evalflow/evalflow/devkit/modproxy"
)

func main() {
	out := flag.String("out", ".state/modproxy", "the proxy's directory (replaced)")
	version := flag.String("version", "v0.0.0", "the version every module is served at")
	root := flag.String("root", ".", "the checkout")
	flag.Parse()
	paths, err := modproxy.Write(*out, *root, *version, flag.Args()...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-modproxy:", err)
		os.Exit(1)
	}
	for _, p := range paths {
		fmt.Println(p, *version)
	}
}
