# Everything a fresh machine needs comes from here: Debian packages when missing, a virtualenv,
# the package with its extras. `make test` and `make demo` install first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install lint test demo demo-stop bench soak clean

install: $(STAMP)

$(STAMP): setup.cfg setup.py scripts/install-system-deps.sh
	scripts/install-system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

LINT_STAMP := $(VENV)/.lint-stamp

$(LINT_STAMP): $(STAMP) setup.cfg setup.py
	$(PY) -m pip install --quiet -e '.[lint]'
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	$(VENV)/bin/flake8 storagefs tests scripts
	$(VENV)/bin/mypy

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# make demo DEMO_STORE=s3://BUCKET[/PREFIX] [DEMO_S3_ENDPOINT=http://127.0.0.1:9000]: the
# server on a bucket (credentials from the AWS variables; README, Scaling out).
DEMO_STORE ?=
DEMO_S3_ENDPOINT ?=

demo: install
	STORAGEFS_DEMO_STORE='$(DEMO_STORE)' STORAGEFS_DEMO_S3_ENDPOINT='$(DEMO_S3_ENDPOINT)' \
		$(PY) scripts/demo.py start

demo-stop:
	$(PY) scripts/demo.py stop

bench: install
	scripts/install-system-deps.sh --bench
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) scripts/bench.py $(BENCH_ARGS)

soak: install
	$(PY) scripts/soak.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
