# webchat: make run (the whole stack on this machine) and make test.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PACKAGES := -e lib/webchat_common -e lib/webchat_testing -e services/auth -e services/files -e services/chat
SYSTEM_PACKAGES := redis-server nginx openssl
UNIT_TESTS = $(wildcard lib/*/tests services/*/tests)

.PHONY: help run test test-unit test-integration test-deploy system-deps venv clean bench-chat bench-history bench-request-path bench-longpoll

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

run: system-deps venv ## run Redis, the services and nginx locally (GATEWAY_PORT=8080, CHAT_REPLICAS=2, REDIS_TOPOLOGY=single|sentinel|cluster)
	$(PY) -m localstack

test: system-deps venv ## unit tests of each package, then integration tests through the gateway
	$(PY) -m pytest $(UNIT_TESTS)
	$(PY) -m pytest tests

test-deploy: system-deps venv ## static checks of the Dockerfiles, docker-compose.yml and k8s/ (needs kubectl, nginx)
	$(PY) -m pytest tests/deploy

system-deps: ## install redis-server and nginx from the system packages when missing (needs root)
	@bash scripts/system-deps.sh $(SYSTEM_PACKAGES)

venv: $(VENV)/.installed ## the virtualenv with pinned dependencies

$(VENV)/.installed: constraints.txt requirements-dev.txt lib/*/pyproject.toml services/*/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -r requirements-dev.txt $(PACKAGES)
	touch $@

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) var

bench-chat: system-deps venv ## chat benchmark: webchat vs Flask-SocketIO vs in-memory flask-sock, N=100,1000 and max sockets (BENCH_ARGS=...)
	$(PY) -m pip install -q -c constraints.txt -r bench/requirements.txt
	$(PY) bench/chat_load.py --max-sockets $(BENCH_ARGS)

bench-longpoll: system-deps venv ## long-polling benchmark: webchat over WebSocket vs long-polling vs Flask-SocketIO polling, one run (BENCH_ARGS=...)
	$(PY) -m pip install -q -c constraints.txt -r bench/requirements.txt
	$(PY) bench/longpoll_bench.py $(BENCH_ARGS)

bench-history: system-deps venv ## history benchmark: pages of a 10,000-message conversation through the gateway vs /api/me (BENCH_ARGS=...)
	$(PY) -m pip install -q -c constraints.txt -r bench/requirements.txt
	$(PY) bench/history_bench.py $(BENCH_ARGS)

bench-request-path: system-deps venv ## request-path benchmark: auth /api/me vs a bare Flask app vs files x-accel, one run (BENCH_ARGS=...)
	$(PY) -m pip install -q -c constraints.txt -r bench/requirements.txt
	$(PY) bench/request_path.py $(BENCH_ARGS)
