#!/usr/bin/env bash
# Makes sure RabbitMQ and Redis answer on the addresses the stack uses.
# When one is missing and we may (root, apt-get), install the Debian package and start it.
# Set AMQP_URL / REDIS_URL to use servers elsewhere; this script then only checks them.
set -euo pipefail

AMQP_HOST=${AMQP_HOST:-127.0.0.1}
AMQP_PORT=${AMQP_PORT:-5672}
REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
ALLOW_INSTALL=${ALLOW_INSTALL:-1}

answers() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_for() {
  local name=$1 host=$2 port=$3
  for _ in $(seq 1 60); do
    answers "$host" "$port" && { echo "$name answers on $host:$port"; return 0; }
    sleep 1
  done
  echo "$name does not answer on $host:$port" >&2
  return 1
}

can_install() {
  [ "$ALLOW_INSTALL" = "1" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null
}

install_package() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >/dev/null; }
}

ensure_redis() {
  answers "$REDIS_HOST" "$REDIS_PORT" && { echo "Redis answers on $REDIS_HOST:$REDIS_PORT"; return 0; }
  [ "$REDIS_HOST" = "127.0.0.1" ] || { echo "Redis at $REDIS_HOST:$REDIS_PORT does not answer" >&2; return 1; }
  if ! command -v redis-server >/dev/null; then
    can_install || { echo "Redis is not installed; install the redis-server package" >&2; return 1; }
    echo "installing redis-server"
    install_package redis-server
  fi
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/facerestore.log
  wait_for Redis "$REDIS_HOST" "$REDIS_PORT"
}

ensure_rabbitmq() {
  answers "$AMQP_HOST" "$AMQP_PORT" && { echo "RabbitMQ answers on $AMQP_HOST:$AMQP_PORT"; return 0; }
  [ "$AMQP_HOST" = "127.0.0.1" ] || { echo "RabbitMQ at $AMQP_HOST:$AMQP_PORT does not answer" >&2; return 1; }
  if ! command -v rabbitmq-server >/dev/null; then
    can_install || { echo "RabbitMQ is not installed; install the rabbitmq-server package" >&2; return 1; }
    echo "installing rabbitmq-server"
    install_package rabbitmq-server
  fi
  # A node that is up but has its app stopped answers rabbitmqctl; start the app then.
  if rabbitmqctl -q status >/dev/null 2>&1; then
    rabbitmqctl -q start_app >/dev/null 2>&1 || true
  else
    rabbitmq-server -detached
  fi
  wait_for RabbitMQ "$AMQP_HOST" "$AMQP_PORT"
}

ensure_redis
ensure_rabbitmq
