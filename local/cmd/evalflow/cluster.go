package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/evalflow/evalflow/local/stack"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/oci"
)

// clusterRun is how a run of the run command reaches a Kubernetes cluster: its Job
// runs there, the rest of evalflow here.
type clusterRun struct {
	kubeconfig string // the file
	jobAddress string // this machine as the cluster's pods reach it
	images     string // where the cluster pulls the engines' images from
}

// prepare puts the kubeconfig in req and readies cfg for a Job on that cluster: the
// broker on the address the pods reach this machine at, the images' registry, and
// the benchmark data published to the results registry (a Job's pod has no volume
// with it). It returns the address the pods reach this machine at.
func (c clusterRun) prepare(ctx context.Context, cfg *stack.Config, req *evalflow.Request) (string, error) {
	kc, err := os.ReadFile(c.kubeconfig)
	if err != nil {
		return "", fmt.Errorf("-kubeconfig: %w", err)
	}
	req.Kubeconfig = string(kc)
	if cfg.OCI.Registry == "" {
		return "", fmt.Errorf("-registry is required with -kubeconfig: the Job pushes its results to a registry that both it and this machine reach")
	}
	addr := c.jobAddress
	if addr == "" {
		if addr, err = localServer(kc); err != nil {
			return "", err
		}
	}
	cfg.JobAddress = addr
	dest, err := oci.Open(oci.Config{Registry: cfg.OCI.Registry + "/datasets", PlainHTTP: cfg.OCI.PlainHTTP,
		Username: cfg.OCI.Username, Password: cfg.OCI.Password})
	if err != nil {
		return "", err
	}
	fmt.Printf("publishing the datasets to %s/datasets ...\n", cfg.OCI.Registry)
	data, err := dest.PushDir(ctx, strings.TrimRight(cfg.DataDir, "/"), "datasets")
	if err != nil {
		return "", fmt.Errorf("publish the datasets for the Job: %w", err)
	}
	images := c.images
	if images == "" {
		images = cfg.OCI.Registry
	}
	cfg.ExtraEnv = append(cfg.ExtraEnv, "EVALFLOW_JOB_IMAGES="+images,
		"EVALFLOW_DATA_ARTIFACT="+cfg.OCI.Registry+"/datasets@"+data.Digest)
	return addr, nil
}

// localServer is the host of the kubeconfig's API server when it is an address of
// this machine (a node on it, as make node-up brings up): its pods reach this
// machine there. Otherwise -job-address must say.
func localServer(kubeconfig []byte) (string, error) {
	var kc struct {
		CurrentContext string `json:"current-context"`
		Contexts       []struct {
			Name    string
			Context struct{ Cluster string }
		}
		Clusters []struct {
			Name    string
			Cluster struct{ Server string }
		}
	}
	if err := yaml.Unmarshal(kubeconfig, &kc); err != nil {
		return "", fmt.Errorf("-kubeconfig: %w", err)
	}
	cluster := ""
	for _, c := range kc.Contexts {
		if c.Name == kc.CurrentContext {
			cluster = c.Context.Cluster
		}
	}
	for _, c := range kc.Clusters {
		if c.Name != cluster {
			continue
		}
		u, err := url.Parse(c.Cluster.Server)
		if err != nil {
			return "", fmt.Errorf("-kubeconfig: server: %w", err)
		}
		if ip := net.ParseIP(u.Hostname()); ip != nil && !ip.IsLoopback() && isLocal(ip) {
			return ip.String(), nil
		}
		return "", fmt.Errorf("the cluster's API server %s is not on this machine: give -job-address, an address of this machine its pods reach", u.Host)
	}
	return "", fmt.Errorf("-kubeconfig: no cluster for current context %q", kc.CurrentContext)
}

func isLocal(ip net.IP) bool {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}
