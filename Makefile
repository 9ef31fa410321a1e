# The two commands of README.md.
#   make demo  - on a fresh Debian/Ubuntu machine as root: a single-host mirror, shown working
#                (make demo-remove stops and removes it)
#   make test  - the whole test suite (lint, unit and integration tests, molecule)
VENV ?= .venv
PYTHON ?= python3

.PHONY: demo demo-remove test lint unit molecule venv clean

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

demo:
	bash scripts/demo.sh

demo-remove:
	bash scripts/demo.sh remove

test: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/test.sh

lint: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/test.sh lint

unit: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/test.sh unit

molecule: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/test.sh molecule

clean:
	rm -rf $(VENV) sr3-hpc_mirror-*.tar.gz
