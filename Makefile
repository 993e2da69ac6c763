# The two Quick start commands: `make reproduce` (the default reproduction) and `make test`.
# Each sets up what it needs: a .venv with the pinned torch, and Debian's Fashion-MNIST.
VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
FMNIST    := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CONFIG    ?= config/quick.yaml
CORES     ?= all
WORKDIR   ?= .
SNAKEMAKE := $(VENV)/bin/snakemake --configfile $(abspath $(CONFIG)) --cores $(CORES) --directory $(WORKDIR)
# results/<name>, as the validated config says (asked at run time: the .venv may not exist yet)
OUTPUT    := cd $(WORKDIR) && $(abspath $(PY)) -m atlib plan --output-dir $(abspath $(CONFIG))

.PHONY: reproduce test lint data slurm chromium

# flock is released by the kernel even when a run is SIGKILLed, so holding it proves no other
# reproduction runs here; Snakemake's own lock is cleared only when no snakemake process works in
# the folder (one started by hand keeps its lock).
reproduce: $(STAMP) data
	@mkdir -p $(WORKDIR)/.snakemake
	@flock -n -E 75 $(WORKDIR)/.snakemake/atlib.flock sh -c '$(PY) -m atlib clear-stale-locks $(WORKDIR) && $(SNAKEMAKE) && \
	  ( cd $(WORKDIR) && $(abspath $(PY)) -m atlib mlflow-sync $(abspath $(CONFIG)) && \
	    $(abspath $(PY)) -m atlib mlflow-summary $(abspath $(CONFIG)) >/dev/null || true ) && \
	  html=$$($(OUTPUT))/report.html && $(SNAKEMAKE) --report $$html >/dev/null 2>&1 && \
	  echo "HTML report (tables, figures, verdicts): $$html"'; \
	  rc=$$?; [ $$rc -ne 75 ] || echo "atlib: another reproduction is running in $(WORKDIR)"; exit $$rc

# Two pytest workers, each test file on one of them: much of the suite waits (SLURM's status polls, servers
# starting, browsers drawing), so the other runs meanwhile; the synthetic DAG is built once for both
# (tests/conftest.py). `.venv/bin/pytest -q` runs the same tests in one process.
test: $(STAMP) data slurm chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The SLURM test starts a one-node cluster from Debian's packages (scripts/slurm-test-cluster).
slurm:
	@if ! command -v slurmctld >/dev/null && command -v apt-get >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq slurmctld slurmd slurm-client munge; fi

# The MLflow UI test drives a headless Chromium (scripts/ui_check.py); without it that test is skipped.
chromium:
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq chromium; fi

# Debian ships the original Fashion-MNIST IDX files; elsewhere point a config's root at a copy.
data:
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; fi
