# CWSAM for QGIS: set-up, tests and tools. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Debian's interpreter: the only one that can import PyQGIS.
SYSTEM_PYTHON ?= /usr/bin/python3
VENV          ?= .venv
PY            := $(VENV)/bin/python
STAMP         := $(VENV)/.setup-stamp
# The system's numpy, which QGIS's compiled modules are built against: pip must keep it in the venv.
CONSTRAINTS   := $(VENV)/system-constraints.txt
LIGHT_STAMP   := $(VENV)/.setup-light-stamp
APT_PACKAGES  := python3-qgis python3-venv python3-pip qgis
SUDO          := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS   ?=

export QT_QPA_PLATFORM ?= offscreen

.PHONY: help setup setup-light system-constraints test test-newest-qgis test-slow bench bench-train clean apt-deps package install-plugin demo demo-model

# The QGIS profile that `make install-plugin` links the plugin into.
QGIS_PROFILE_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default
PLUGIN_VERSION   := $(shell sed -n 's/^version=//p' metadata.txt)
PLUGIN_ZIP       := dist/cwsam_qgis-$(PLUGIN_VERSION).zip

help:
	@echo "make setup      install system packages (apt) and .venv with pinned dependencies"
	@echo "make setup-light  the light install: classify with ONNX models without PyTorch (requirements-classify.txt)"
	@echo "make test       run the whole test suite headless (runs setup when needed)"
	@echo "make test-newest-qgis  the plugin tests on Debian sid's QGIS and Python with the light install (root; builds a chroot once)"
	@echo "make test-slow  also run the opt-in slow tests (full-size SAM backbones)"
	@echo "make demo       classify the bundled simulated scene with the bundled model, offline (out/demo/)"
	@echo "make demo-model rebuild the bundled demo model and scene in resources/demo/ (about 15 min on a CPU)"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make package    build the installable plugin zip $(PLUGIN_ZIP)"
	@echo "make install-plugin  link the plugin into the QGIS profile QGIS_PROFILE_DIR and enable it"
	@echo "make bench-train  train and score vit_tiny on the real SAR data in ../shared (3 seeds x 8 folds x 4 min of training: about 2 h)"
	@echo "make clean      remove .venv, caches and test outputs"

setup: $(STAMP)

# Re-run only when the pins or the project metadata change.
$(STAMP): requirements.txt pyproject.toml
	@$(MAKE) --no-print-directory apt-deps
	@[ -x $(PY) ] || $(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	@$(MAKE) --no-print-directory system-constraints
	$(PY) -m pip install --quiet -r requirements.txt -c $(CONSTRAINTS)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) tools/check_env.py
	@touch $@

setup-light: $(LIGHT_STAMP)

# Classification with ONNX exports only: ONNX Runtime instead of PyTorch (about 300 MB installed instead of 6 GB).
$(LIGHT_STAMP): requirements-classify.txt pyproject.toml
	@$(MAKE) --no-print-directory apt-deps
	@[ -x $(PY) ] || $(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	@$(MAKE) --no-print-directory system-constraints
	$(PY) -m pip install --quiet -r requirements-classify.txt -c $(CONSTRAINTS)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) tools/check_env.py --light
	@touch $@

system-constraints:
	@$(SYSTEM_PYTHON) -c "import numpy; print('numpy==' + numpy.__version__)" > $(CONSTRAINTS) 2>/dev/null \
	  || : > $(CONSTRAINTS); echo "pip keeps the system's packages: $$(cat $(CONSTRAINTS))"

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "System packages present: $(APT_PACKAGES)"; fi

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

# The plugin tests on the newest QGIS that Debian ships (a sid chroot, built once in NEWEST_QGIS_ROOT, with the
# light install on its Python): ONNX test models made here with the full install, then tools/test_newest_qgis.sh.
test-newest-qgis: $(STAMP)
	$(PY) tools/make_light_test_models.py build/light-models
	bash tools/test_newest_qgis.sh build/light-models $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest --runslow $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) tools/demo.py

demo-model: $(STAMP)
	nice $(PY) tools/make_demo_model.py

bench: $(STAMP)
	$(PY) bench/bench_model.py
	$(PY) bench/bench_classify.py
	$(PY) bench/bench_vectorize.py
	$(PY) bench/bench_change.py --size 8192
	$(PY) bench/bench_onnx.py
	$(PY) bench/bench_review_loop.py
	$(PY) bench/bench_worker.py

bench-train: $(STAMP)
	$(PY) -m pip install --quiet -r requirements-bench.txt
	$(PY) bench/bench_train.py

package:
	$(SYSTEM_PYTHON) tools/package_plugin.py --output $(PLUGIN_ZIP)

install-plugin:
	$(SYSTEM_PYTHON) tools/install_plugin.py "$(QGIS_PROFILE_DIR)"

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info .test-profile
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
