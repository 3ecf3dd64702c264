# evalflow — see README.md. The two commands: `make run` and `make test`.
SHELL := /bin/bash
# One function a step (evalflow.Steps; a test keeps functions/ in step with it).
FUNCTIONS := $(notdir $(wildcard functions/*))
MODULES := shared devkit localjob runner local eventing triggers $(FUNCTIONS:%=functions/%)
PKGS := $(MODULES:%=./%/...)
# local/... first: go test starts packages in this order, two at a time, and
# local/e2e's end-to-end tests take longest; the rest run beside them.
TEST_PKGS := ./local/... $(filter-out ./local/...,$(PKGS))
BIN := $(CURDIR)/bin
CACHE ?= $(HOME)/.cache/evalflow
SHARED ?= $(abspath $(CURDIR)/../shared)
export EVALFLOW_CACHE := $(CACHE)

.PHONY: release tidy-check run test bench bench-load bench-ui deps node-deps test-deps tools apt build vet fmt-check up clean images cluster-up node-up node-down knative-up deploy bench-knative

## run: evaluate the bundled tiny model on a small MMLU subset, end to end, locally
run: deps build
	$(BIN)/evalflow run --data $(SHARED)/datasets --gguf $(SHARED)/models/stories260K.gguf --state $(CURDIR)/.state

## up: bring local evalflow up and keep it serving (API on :8080)
up: deps build
	$(BIN)/evalflow up --data $(SHARED)/datasets --state $(CURDIR)/.state --port 8080

## test: every module's tests against real servers on loopback, plus vet and gofmt;
## what they need is built JOBS at a time first (docs/ci.md)
JOBS ?= 2
test:
	@$(MAKE) --no-print-directory -j$(JOBS) -Oline test-deps build vet fmt-check tidy-check
	EVALFLOW_REQUIRE_SERVERS=1 EVALFLOW_SHARED_DIR=$(SHARED) \
	EVALFLOW_ORAS=$$(hack/install-oras.sh) EVALFLOW_KUBE=$$(hack/install-kube.sh) EVALFLOW_COREDNS=$$(hack/install-coredns.sh) \
	EVALFLOW_NETPOL=$$(hack/install-netpol.sh) EVALFLOW_LLAMA_ECHO=$$(hack/install-llama-echo.sh) EVALFLOW_PLAYWRIGHT=$$(hack/install-browser.sh) \
	EVALFLOW_SANDBOX_PYTHON=$$(hack/install-sandbox-python.sh) \
	go test -count=1 -timeout 45m $(TEST_PKGS)

## bench: the runner vs a raw load generator vs promptfoo against the tiny-model
## server at concurrency 1, 8, 32, on MMLU and on BBH; writes docs/benchmarks.md and
## docs/benchmarks-bbh.md (about 20 minutes)
bench: deps build
	go build -o $(BIN)/evalflow-bench ./runner/cmd/evalflow-bench
	$(BIN)/evalflow-bench -runner $(BIN)/evalflow-runner -data $(SHARED)/datasets \
	  -gguf $(SHARED)/models/stories260K.gguf -promptfoo $$(hack/install-promptfoo.sh) -out docs/benchmarks.md
	$(BIN)/evalflow-bench -runner $(BIN)/evalflow-runner -data $(SHARED)/datasets \
	  -gguf $(SHARED)/models/stories260K.gguf -dataset bbh_cot_fewshot -limit 3 -repeats 9 -out docs/benchmarks-bbh.md

## bench-load: 1000 small runs started in one burst against local mode and a scripted
## model server: all accepted and ended, time to drain, peak memory, Redis commands per
## step, jobs at once; writes docs/benchmarks-load.md (a few minutes)
bench-load: deps build
	go build -o $(BIN)/evalflow-bench-load ./local/cmd/evalflow-bench-load
	$(BIN)/evalflow-bench-load -runs 1000 -max-jobs 8 -data $(SHARED)/datasets -out docs/benchmarks-load.md

## bench-ui: the results page's samples view in headless chromium on a run of every
## MMLU test question: opening it (cold and warm) and each filter; writes
## docs/benchmarks-ui.md (a few minutes)
bench-ui: deps build
	@hack/install-browser.sh >/dev/null
	go build -o $(BIN)/evalflow-bench-ui ./local/cmd/evalflow-bench-ui
	$(BIN)/evalflow-bench-ui -data $(SHARED)/datasets -playwright $$(hack/install-browser.sh) -out docs/benchmarks-ui.md

## bench-knative: the pipeline on Knative on the node (root): each function's image
## size, cold start and idle memory; POST → Job created and the orchestration overhead
## with warm functions; writes docs/benchmarks-knative.md (about 45 minutes)
bench-knative: knative-up deploy
	go build -o $(BIN)/evalflow-bench-knative ./local/cmd/evalflow-bench-knative
	$(BIN)/evalflow-bench-knative -node $(NODE_DIR) -gguf $(SHARED)/models/stories260K.gguf -runs 10 -cold 5 -out docs/benchmarks-knative.md

## deps: what tests and runs need — Debian's redis-server, docker-registry and
## htpasswd; ollama and the oras CLI built once and cached in $(CACHE)
deps:
	@hack/apt-install.sh $(APT_RUN)
	@hack/install-ollama.sh >/dev/null
	@hack/install-oras.sh >/dev/null

## node-deps: what a Kubernetes node on this machine needs: Debian's containerd, runc,
## CNI plugins and iptables, and Kubernetes (etcd, kube-apiserver,
## kube-controller-manager, kube-scheduler, kubelet, kube-proxy), CoreDNS and the
## NetworkPolicy enforcer (hack/netpol, on kube-network-policies) built once from the Go
## module proxy and cached in $(CACHE)
node-deps:
	@hack/apt-install.sh $(APT_NODE)
	@hack/cluster-tools.sh kube coredns >/dev/null
	@hack/install-netpol.sh >/dev/null

## test-deps: what only tests need: the node's parts (node-deps), Knative Eventing and
## Serving built from source with ko, Traefik, the func CLI, and llama-echo, a model
## server that scores echoed prompts; built once and cached in $(CACHE); Debian's
## chromium and playwright-core for the results page; and a check that the page's
## bundled Chart.js is the pinned npm release
test-deps: tools
	@hack/vendor-ui.sh --check >/dev/null
	cd hack/llama-echo && CGO_CPPFLAGS=-I$$(../llama-headers.sh) GOWORK=off GOFLAGS=-mod=mod go vet . && CGO_CPPFLAGS=-I$$(../llama-headers.sh) GOWORK=off GOFLAGS=-mod=mod go test -count=1 .
	cd hack/netpol && GOWORK=off GOFLAGS=-mod=mod go vet .

APT_RUN := redis-server docker-registry apache2-utils python3 bubblewrap
APT_NODE := containerd runc containernetworking-plugins iptables
# Every tool `make test` needs, longest build first: Debian's packages in one apt-get,
# then the builds, side by side under make -j (make test runs JOBS at a time). One
# cold Go build leaves a core idle while it links, downloads or compiles C++ one file
# at a time; a second fills it. cluster: Kubernetes, CoreDNS and Traefik in one go
# build (hack/cluster-tools.sh). llama-echo reuses ollama's compiled llama.cpp.
TOOLS := cluster knative func ollama oras llama-echo browser netpol
tools: $(TOOLS:%=tool-%)
apt:
	@hack/apt-install.sh $(APT_RUN) $(APT_NODE) chromium $(if $(shell command -v npm),,nodejs npm)
$(TOOLS:%=tool-%): apt
tool-llama-echo: tool-ollama
tool-cluster:
	@hack/cluster-tools.sh >/dev/null
tool-knative:
	@hack/install-knative.sh eventing >/dev/null
	@hack/install-knative.sh serving >/dev/null
# (Not .PHONY: make looks for no pattern rule for a phony target.)
tool-%:
	@hack/install-$*.sh >/dev/null

build:
	go build -o $(BIN)/evalflow ./local/cmd/evalflow
	go build -o $(BIN)/evalflow-runner ./runner/cmd/evalflow-runner
	go build -o $(BIN)/lm-eval-adapter ./runner/cmd/lm-eval-adapter
	go build -o $(BIN)/opencompass-adapter ./runner/cmd/opencompass-adapter

# After build: side by side (make -j) they would compile the same packages twice.
vet: | build
	go vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $(MODULES) hack); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# tidy-check: each module that builds on its own (as func builds a function, out of
# the workspace) lists every module it needs: go mod tidy would change nothing.
# (devkit/repo's test keeps every module on the same versions: go work sync.)
tidy-check:
	@for m in $(MODULES) hack/netpol; do (cd $$m && GOWORK=off go mod tidy -diff >/dev/null) || { echo "$$m: go.mod is not tidy (cd $$m && GOWORK=off go mod tidy)"; exit 1; }; done

clean:
	rm -rf $(BIN) .state

## node-up: a single-node Kubernetes on this machine whose pods really run (root;
## devkit/node): its kubeconfig in .state/node/kubeconfig, its registry at the node
## address, the runner's image and the datasets pushed there. Idempotent.
NODE_DIR := $(CURDIR)/.state/node
node-up: deps node-deps build
	CGO_ENABLED=0 go build -trimpath -o $(BIN)/image/evalflow-pause ./devkit/cmd/evalflow-pause
	go build -o $(BIN)/evalflow-node ./devkit/cmd/evalflow-node
	@mkdir -p $(NODE_DIR)
	$(BIN)/evalflow-node up -dir $(NODE_DIR) -pause $(BIN)/image/evalflow-pause -network-policy $$(hack/install-netpol.sh) > $(NODE_DIR)/env
	@. $(NODE_DIR)/env && $(MAKE) --no-print-directory images IMAGE_REGISTRY=$$NODE_REGISTRY/evalflow && \
	echo && echo "node up: KUBECONFIG=$$NODE_KUBECONFIG; registry $$NODE_REGISTRY. Evaluate on it:" && \
	echo "  bin/evalflow run --kubeconfig $$NODE_KUBECONFIG --registry $$NODE_REGISTRY/evalflow --plain-http --data $(SHARED)/datasets"

## knative-up: Knative Eventing (core, in-memory channel, MT channel broker) and Serving,
## built from source with ko and cached in $(CACHE), with Traefik as Serving's
## networking layer, on the node of make node-up
knative-up: node-up
	@hack/install-knative.sh eventing >/dev/null
	@hack/install-knative.sh serving >/dev/null
	@hack/install-traefik.sh >/dev/null
	$(BIN)/evalflow-node knative -dir $(NODE_DIR)

## node-down: stop the node and remove everything it added to the machine
node-down:
	@if [ -x $(BIN)/evalflow-node ]; then $(BIN)/evalflow-node down -dir $(NODE_DIR); \
	else go run ./devkit/cmd/evalflow-node down -dir $(NODE_DIR); fi

## cluster-up: a kind cluster on a machine with a Docker engine (kind, kubectl): a
## registry on localhost:5001 its nodes pull from, Knative Serving with Kourier, and
## Eventing, at the versions hack/kind-up.sh pins; it waits for Knative's webhooks.
## Then: make deploy REGISTRY=localhost:5001/evalflow INGRESS_PORT=31080 PLAIN_HTTP=1
## POD_REGISTRY=kind-registry:5000/evalflow
cluster-up:
	hack/kind-up.sh

## release: an evalflow release under REGISTRY=HOST[:PORT]/PREFIX (local/release):
## every image evalflow runs (the five functions, the runner, the sandbox, Redis and
## the results registry from Debian's programs), built without Docker and pushed, and
## dist/evalflow.yaml, the manifest that installs it, every image by digest and no
## Secret in it: bin/evalflow install -f dist/evalflow.yaml (docs/install.md). The
## same commit gives the same digests and the same file. PLAIN_HTTP=1 where the
## registry speaks plain HTTP; POD_REGISTRY=HOST[:PORT]/PREFIX where pods reach it by
## another name; PLATFORM=os/arch of the nodes (default this machine's); DATA=DIR the
## benchmark data published beside the images for the Jobs (default ../shared/datasets).
REGISTRY ?=
INGRESS_PORT ?=
PLAIN_HTTP ?=
POD_REGISTRY ?=
PLATFORM ?=
DATA ?= $(SHARED)/datasets
RELEASE_FLAGS = $(if $(PLAIN_HTTP),-plain-http) $(if $(POD_REGISTRY),-pod-registry $(POD_REGISTRY)) -sandbox-python $$(hack/install-sandbox-python.sh)
release: deps build
	@if [ -z "$(REGISTRY)" ]; then echo "make release: give REGISTRY=HOST[:PORT]/PREFIX"; exit 1; fi
	go build -o $(BIN)/evalflow-release ./local/cmd/evalflow-release
	$(BIN)/evalflow-release -registry $(REGISTRY) $(RELEASE_FLAGS) $(if $(PLATFORM),-platform $(PLATFORM)) $(if $(wildcard $(DATA)),-data $(DATA)) -out dist/evalflow.yaml

## deploy: the developer's shortcut: a release of the checkout built and installed at
## once (local/deploy) on the cluster of the current kubectl context, which runs
## Knative Serving and Eventing; prints START_URL and an operator's token. With
## REGISTRY (and PLAIN_HTTP, POD_REGISTRY) as for make release; without it, on the
## node of make knative-up. The benchmark data is published beside the images.
deploy: deps build
	go build -o $(BIN)/evalflow-deploy ./local/cmd/evalflow-deploy
	@if [ -n "$(REGISTRY)" ]; then \
	  $(BIN)/evalflow-deploy -registry $(REGISTRY) $(RELEASE_FLAGS) -ingress-port "$(INGRESS_PORT)" -data $(SHARED)/datasets; \
	elif [ -f $(NODE_DIR)/ingress.json ]; then \
	  $(BIN)/evalflow-deploy -node $(NODE_DIR) -sandbox-python $$(hack/install-sandbox-python.sh) -data $(SHARED)/datasets; \
	else echo "make deploy: give REGISTRY=HOST[:PORT]/PREFIX for the current kubectl context, or run make knative-up first"; exit 1; fi

## images: the engines' container images, tagged as shared/engines/registry.json names
## them and pushed under IMAGE_REGISTRY. With a Docker engine, every Dockerfile of
## runner/images (also tagged under IMAGE_REGISTRY); without one, the
## built-in runner's image on evalflow's own base (runner/cmd/evalflow-image), pushed
## under IMAGE_REGISTRY (the Python engines' images need a Docker engine and PyPI).
## Either way, the sandbox pod's image (evalflow-sandbox on Debian's python3).
IMAGE_REGISTRY ?= 127.0.0.1:5000/evalflow
images:
	@if docker info >/dev/null 2>&1; then \
	  for d in runner/images/*/; do \
	    name=$$(basename $$d); \
	    image=$$(grep -o "\"ghcr.io/evalflow/$$name:[^\"]*\"" shared/engines/registry.json | tr -d '"'); \
	    docker build -f $$d/Dockerfile -t $$image . || exit 1; \
	    docker tag $$image $(IMAGE_REGISTRY)/$$(basename $$image) && docker push $(IMAGE_REGISTRY)/$$(basename $$image) || exit 1; \
	  done; \
	else \
	  echo "no Docker engine: building the built-in runner's image with go-containerregistry, pushing under $(IMAGE_REGISTRY)"; \
	  CGO_ENABLED=0 go build -trimpath -o $(BIN)/image/evalflow-runner ./runner/cmd/evalflow-runner && \
	  go run ./runner/cmd/evalflow-image -engine evalflow -binary $(BIN)/image/evalflow-runner -registry $(IMAGE_REGISTRY); \
	fi
	CGO_ENABLED=0 go build -trimpath -o $(BIN)/image/evalflow-sandbox ./runner/cmd/evalflow-sandbox
	go run ./runner/cmd/evalflow-image -sandbox-python $$(hack/install-sandbox-python.sh) -binary $(BIN)/image/evalflow-sandbox -registry $(IMAGE_REGISTRY)
