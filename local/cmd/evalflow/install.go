package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/evalflow/evalflow/local/install"
)

// installCmd puts a release manifest on the cluster of the kubeconfig (local/install)
// and prints start's URL and an operator's token.
func installCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("install", flag.ExitOnError)
	manifest, kubeconfig := manifestFlags(fs)
	port := fs.String("ingress-port", "", "the port the cluster's ingress answers this machine on, if not start's URL's (a port-forward)")
	fs.Parse(args)
	m, kc, err := readInstallFiles(*manifest, *kubeconfig)
	if err != nil {
		return err
	}
	in, err := install.Install(ctx, install.Config{Kubeconfig: kc, Manifest: m, IngressPort: *port, Log: os.Stderr})
	if err != nil {
		return err
	}
	fmt.Printf("START_URL=%s\n", in.StartURL)
	if in.OperatorToken != "" {
		fmt.Printf("OPERATOR_TOKEN=%s\n", in.OperatorToken)
	}
	return nil
}

// uninstallCmd takes a release manifest off the cluster, keeping the runs' data
// unless told.
func uninstallCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("uninstall", flag.ExitOnError)
	manifest, kubeconfig := manifestFlags(fs)
	deleteData := fs.Bool("delete-data", false, "also delete the runs' data: Redis's and the registry's volumes, the Secrets and the evalflow namespace")
	fs.Parse(args)
	m, kc, err := readInstallFiles(*manifest, *kubeconfig)
	if err != nil {
		return err
	}
	if err := install.Uninstall(ctx, install.UninstallConfig{Kubeconfig: kc, Manifest: m, DeleteData: *deleteData, Log: os.Stderr}); err != nil {
		return err
	}
	if !*deleteData {
		fmt.Fprintf(os.Stderr, "uninstall: the runs' data stays in namespace %s (its volumes and Secrets): uninstall -delete-data removes it\n", install.Namespace)
	}
	return nil
}

func manifestFlags(fs *flag.FlagSet) (manifest, kubeconfig *string) {
	manifest = fs.String("f", "", "the release manifest (make release: dist/evalflow.yaml)")
	kubeconfig = fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "the cluster's kubeconfig (default $KUBECONFIG, then ~/.kube/config)")
	return manifest, kubeconfig
}

func readInstallFiles(manifest, kubeconfig string) ([]byte, []byte, error) {
	if manifest == "" {
		return nil, nil, fmt.Errorf("-f: the release manifest is required")
	}
	m, err := os.ReadFile(manifest)
	if err != nil {
		return nil, nil, fmt.Errorf("-f: %w", err)
	}
	if kubeconfig == "" {
		home, _ := os.UserHomeDir()
		kubeconfig = filepath.Join(home, ".kube", "config")
	}
	kc, err := os.ReadFile(kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("-kubeconfig: %w", err)
	}
	return m, kc, nil
}
