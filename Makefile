# One entry per job a person runs. Every target sets up what it needs first.
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup setup-test demo test unit lint image bench bench-report bench-crio bench-scrape bench-wasted bench-pull-cost bench-series protos dashboards rules docs lock clean

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

demo: setup  ## a sandboxed containerd with sample images and pods, the exporter serving, the df table
	$(PY) -m scripts.demo

test: setup-test  ## every test: unit, and integration against a real containerd, Prometheus and Chromium
	$(PY) -m pytest

unit: setup-test  ## only the tests that need no containerd
	$(PY) -m pytest -m "not integration"

image: setup-test  ## the DaemonSet image, built from the Dockerfile with podman (bases made of Debian packages)
	$(PY) -m tests.harness.image_build

lint: setup-test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	$(PY) scripts/gen_protos.py --check

bench: setup
	$(PY) -m benchmarks.busy_node

bench-report: setup-test  ## the cluster report against a real Prometheus holding 1,000 nodes' series (backfilled)
	$(PY) -m benchmarks.report_prometheus

bench-crio: setup-test  ## the containers-storage (CRI-O) layer store on the busy node's images, vs podman system df
	$(PY) -m benchmarks.containers_storage

bench-scrape: setup-test  ## the /metrics endpoint: kept-alive scrapes, hostile clients, basic-auth timing
	$(PY) -m benchmarks.scrape --old-ref 129aa2d

bench-wasted: setup-test  ## the wasted-bytes analysis on real Debian layers (needs mmdebstrap, zstd)
	$(PY) -m benchmarks.wasted

bench-pull-cost: setup-test  ## pull-cost for 10 references on the busy node vs one `ctr images ls`; the report over 100 nodes
	$(PY) -m benchmarks.pull_cost
	$(PY) -m benchmarks.report_pull_cost

bench-series: setup-test  ## series per node at the defaults and in the fleet profile, on the busy node
	$(PY) -m benchmarks.series_budget

protos: setup
	$(PY) scripts/gen_protos.py

dashboards: setup  ## the Grafana dashboards JSON (dashboards/ and the chart's copy)
	$(PY) -m dashboards.generate

rules: setup  ## rules/layer-sharing.rules.yml from the chart's PrometheusRule
	$(PY) -m scripts.gen_rules

lock: setup  ## requirements.lock (hashes) for the image, from pyproject.toml
	.venv/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml

docs: setup  ## generated reference tables: chart values (chart README), metrics, configuration
	$(PY) -m scripts.gen_chart_docs
	$(PY) -m scripts.gen_metrics_docs
	$(PY) -m scripts.gen_config_docs

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache build dist
