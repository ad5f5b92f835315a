# The two commands of the README. Each creates .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out

.PHONY: demo test venv clean

venv: $(STAMP)

# torch/torchvision first, pinned, so the project install does not pull another build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev,ray,report,openvino]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fracture-batch demo --workdir $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_DIR)
