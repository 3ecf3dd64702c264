// Command evalflow-modproxy writes a file-based Go module proxy (GOPROXY=file://DIR)
// serving evalflow's own modules at one version, so that a function's directory builds
// alone — as the func CLI's builders see it, without the replace directives that point
// at ../../shared in the checkout:
//
//	evalflow-modproxy -out .state/modproxy [-pin functions/start] shared localjob devkit
//
// Each module is zipped from its directory under the checkout (golang.org/x/mod/zip,
// the go command's own format), with its go.mod, .info and list files, at a version
// naming their content (modproxy.Version) unless -version names one. -pin makes a
// directory's go.mod (a function's copy) require them at that version.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/evalflow/evalflow/devkit/modproxy"
)

func main() {
	out := flag.String("out", ".state/modproxy", "the proxy's directory (replaced)")
	version := flag.String("version", "", "the version every module is served at (default: one naming their content)")
	root := flag.String("root", ".", "the checkout")
	var pins []string
	flag.Func("pin", "a module directory (a function's copy) to require the modules at the version (repeatable)", func(s string) error {
		pins = append(pins, s)
		return nil
	})
	flag.Parse()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "evalflow-modproxy:", err)
		os.Exit(1)
	}
	if *version == "" {
		v, err := modproxy.Version(*root, flag.Args()...)
		if err != nil {
			fail(err)
		}
		*version = v
	}
	paths, err := modproxy.Write(*out, *root, *version, flag.Args()...)
	if err != nil {
		fail(err)
	}
	for _, dir := range pins {
		if err := modproxy.Pin(dir, paths, *version); err != nil {
			fail(err)
		}
	}
	for _, p := range paths {
		fmt.Println(p, *version)
	}
}
