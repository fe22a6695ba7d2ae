# Kubernetes packaging: images, Helm chart, Kustomize overlays, and the real tools that check
# them. Included by the main Makefile, which defines VENV, BIN and TOOLS.

HELM := $(TOOLS)/bin/helm
CHECKOV := $(TOOLS)/checkov/bin/checkov
CHART := charts/flight-delay
# Where `make images` tags (and, with PUSH=1, pushes) the images; the defaults match
# components/images.py and the chart's image.registry / appVersion.
REGISTRY ?= ghcr.io/flight-delay-mlops
TAG ?= 0.1.0
PUSH ?= 0

$(HELM): tools/install-helm.sh
	TOOLS=$(abspath $(TOOLS)) PYTHON=$(PYTHON) bash tools/install-helm.sh

$(CHECKOV): tools/install-checkov.sh
	TOOLS=$(abspath $(TOOLS)) PYTHON=$(PYTHON) bash tools/install-checkov.sh

promtool:
	bash tools/install-prometheus.sh

tools: $(HELM) $(CHECKOV) promtool ## install helm, checkov (own venv) and promtool/prometheus

helm-lint: $(HELM) ## helm lint --strict the chart with its default and every ci/*-values.yaml
	$(HELM) lint --strict $(CHART)
	for f in $(CHART)/ci/*-values.yaml; do $(HELM) lint --strict $(CHART) -f $$f || exit 1; done

k8s-validate: venv $(HELM) promtool ## render chart + overlays; kubernetes-validate, KServe and promtool checks
	$(BIN)/python -m tools.k8s_validate --out build/k8s
	promtool test rules $(CHART)/files/prometheus/alerts_test.yml

security-scan: venv $(HELM) $(CHECKOV) ## checkov scan of every rendered manifest; figures to bench/results.json
	$(BIN)/python -m bench.run --only bench_security

test-k8s: venv ## the Kubernetes packaging tests (installs the tools they need)
	$(BIN)/pytest tests/k8s $(PYTEST_ARGS)

images: ## build the component and serving images with podman (REGISTRY, TAG, PUSH=1, NO_CACHE=1)
	REGISTRY=$(REGISTRY) TAG=$(TAG) PUSH=$(PUSH) bash tools/build-images.sh

test-containers: venv ## build the images, run pipeline steps and the chart's serving pods in them
	$(BIN)/pytest -m containers tests/containers $(PYTEST_ARGS)

.PHONY: tools promtool helm-lint k8s-validate security-scan test-k8s images test-containers
