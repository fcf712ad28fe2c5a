# Every target bootstraps its own virtualenv from nothing: `make run` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: run test check lint typecheck bench package clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "pip<26.3"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: $(STAMP) ## the service on http://127.0.0.1:8000 with an embedded AWS endpoint, worker and demo user
	$(BIN)/python -m local.run

test: $(STAMP) ## lint, strict types, then the moto-backed test suite (what CI runs)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: test ## everything CI cares about (test already lints and type-checks)

bench: $(STAMP) ## prints the performance numbers quoted in the issue notes
	$(BIN)/python -m bench.run

package: $(STAMP) ## CloudFormation/SAM template (STAGE=prod by default) with tables, queue, DLQ and IAM, linted
	rm -rf build/package
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(BIN)/chalice package --stage $${STAGE:-prod} --merge-template infra/resources.json build/package
	$(BIN)/cfn-lint build/package/sam.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
