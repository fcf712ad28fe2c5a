# Every target bootstraps its own virtualenv from nothing: `make run` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: run test check lint typecheck bench package templates clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "pip<26.3"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: $(STAMP) ## the service on http://127.0.0.1:8000 with an embedded AWS endpoint, worker and demo user
	$(BIN)/python -m local.run

test: $(STAMP) ## lint, strict types, both stages' templates packaged and cfn-lint'ed, then the moto-backed suite (CI)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory templates
	SMART_SYNC_PACKAGED_TEMPLATES=build/templates $(BIN)/python -m pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: test ## everything CI cares about (test already lints and type-checks)

bench: $(STAMP) ## prints the performance numbers quoted in the issue notes
	$(BIN)/python -m bench.run

package: $(STAMP) ## build/package/sam.json + deployment.zip for STAGE (prod by default), cfn-lint'ed: docs/deploy.md
	rm -rf build/package
	$(BIN)/python -m infra.package --stage $${STAGE:-prod} build/package
	$(BIN)/cfn-lint build/package/sam.json

templates: $(STAMP) ## every stage packaged into build/templates/<stage> and cfn-lint'ed (no AWS account; make test reads them)
	rm -rf build/templates
	$(BIN)/python -m infra.package --stage dev build/templates/dev
	$(BIN)/python -m infra.package --stage prod build/templates/prod
	$(BIN)/cfn-lint build/templates/dev/sam.json build/templates/prod/sam.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
