#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and RabbitMQ answer on loopback: install them with
# apt-get where missing, start them where stopped, then wait until they accept connections.
# Chromium (for the preference center's browser test) and Prometheus (for the metrics
# test) are installed where missing too.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local name="$1" port="$2" tries=0
    until port_open "$port"; do
        tries=$((tries + 1))
        if [ "$tries" -gt 240 ]; then
            echo "!! $name did not open 127.0.0.1:$port within 120s" >&2
            return 1
        fi
        sleep 0.5
    done
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# Headless Chromium for the browser test of the preference center
# (tests/api/test_preference_center.py drives it over the DevTools protocol; the test
# fails, never skips, without it). chromium-driver serves WebDriver clients, if wanted.
if ! command -v chromium >/dev/null 2>&1; then
    echo "==> installing Chromium"
    apt_install chromium chromium-driver
fi

# Node.js for the JavaScript client's tests (tests/client/test_js_client.py runs them with
# `node --test`; it fails, never skips, without node, which must be 20 or later).
if ! command -v node >/dev/null 2>&1; then
    echo "==> installing Node.js"
    apt_install nodejs
fi

# A compose implementation for tests/test_compose.py (`docker compose config` checks
# docker-compose.yml offline; the test fails, never skips, without one): the docker CLI's
# plugin where present, else Debian's standalone docker-compose.
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    echo "==> installing docker-compose"
    apt_install docker-compose
fi

# Prometheus for the metrics test (tests/ops/test_prometheus.py starts its own, with its
# own config, storage and port; it fails, never skips, without the binary). The Debian
# package's own service (and its node exporter) would scrape and listen on :9090/:9100
# for nothing: stopped and disabled where the install started them.
if ! command -v prometheus >/dev/null 2>&1; then
    echo "==> installing Prometheus"
    apt_install prometheus
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
    fi
fi

# PostgreSQL 15, trust auth on loopback.
if ! port_open 5432; then
    if ! ls /etc/postgresql >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        echo "==> installing PostgreSQL"
        apt_install postgresql
    fi
    echo "==> starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
wait_port PostgreSQL 5432

# Redis 7.
if ! port_open 6379; then
    command -v redis-server >/dev/null 2>&1 || { echo "==> installing Redis"; apt_install redis-server; }
    echo "==> starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_port Redis 6379

# RabbitMQ.
if ! port_open 5672; then
    command -v rabbitmq-server >/dev/null 2>&1 || { echo "==> installing RabbitMQ"; apt_install rabbitmq-server; }
    echo "==> starting RabbitMQ"
    rabbitmq-server -detached || true
fi
wait_port RabbitMQ 5672
# The port opens before the broker has finished booting; the tests create vhosts with
# rabbitmqctl, which needs the node fully up.
timeout 120 rabbitmqctl -q await_startup >/dev/null 2>&1 || echo "!! rabbitmqctl await_startup did not succeed" >&2
echo "==> services up: PostgreSQL :5432, Redis :6379, RabbitMQ :5672"
