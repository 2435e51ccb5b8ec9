# Shared by scripts/cluster-up, cluster-down and cluster-node (sourced, not run).
# Three RabbitMQ nodes beside any broker this machine already runs (rabbit@localhost on 5672
# is never touched):
#   node            AMQP  management  stream  prometheus  distribution
#   bus1@localhost  5681  15681       5581    15791       25681
#   bus2@localhost  5682  15682       5582    15792       25682
#   bus3@localhost  5683  15683       5583    15793       25683
# Locally they run as the rabbitmq user and share its Erlang cookie; with no local
# rabbitmq-server but a Docker engine, `docker compose --profile cluster` runs the same three.
CLUSTER_NODES=(1 2 3)
CLUSTER_SEED=bus1@localhost
CLUSTER_CONF_ROOT=${BUS_CLUSTER_CONF_ROOT:-/etc/rabbitmq/bus-cluster}
CLUSTER_DATA_ROOT=${BUS_CLUSTER_DATA_ROOT:-/var/lib/rabbitmq/bus-cluster}
CLUSTER_LOG_ROOT=${BUS_CLUSTER_LOG_ROOT:-/var/log/rabbitmq/bus-cluster}
CLUSTER_WAIT=${BUS_CLUSTER_WAIT_SECONDS:-180}
CLUSTER_PLUGINS="rabbitmq_consistent_hash_exchange,rabbitmq_management,rabbitmq_prometheus,rabbitmq_stream"
# Not the /usr/sbin wrapper: run as the rabbitmq user, it rewrites the startup_log of the
# machine's own broker.
CLUSTER_RMQ_BIN=${BUS_CLUSTER_RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}
CLUSTER_AMQP_URL="amqp://guest:guest@localhost:5681/,amqp://guest:guest@localhost:5682/,amqp://guest:guest@localhost:5683/"
CLUSTER_MANAGEMENT_URL="http://guest:guest@localhost:15681,http://guest:guest@localhost:15682,http://guest:guest@localhost:15683"

CLUSTER_T0=$(date +%s%N)
log() {
  local ms=$((($(date +%s%N) - CLUSTER_T0) / 1000000))
  printf '%s [%4d.%ds]: %s\n' "$(basename "$0")" $((ms / 1000)) $((ms % 1000 / 100)) "$*" >&2
}
die() { log "$*"; exit 1; }

node_name() { echo "bus$1@localhost"; }
# `rabbitmqctl status` fails on a node whose app is stopped: ping answers whenever the Erlang
# node runs, check_running only when the app does.
node_up() { rabbitmq-diagnostics -q -n "$(node_name "$1")" ping -t 10 >/dev/null 2>&1; }
app_running() { rabbitmq-diagnostics -q -n "$(node_name "$1")" check_running -t 10 >/dev/null 2>&1; }
ctl() { rabbitmqctl -q "$@"; }
node_pid_file() { echo "$CLUSTER_DATA_ROOT/bus$1/bus$1.pid"; }

docker_answers() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

# local: this machine's rabbitmq-server (installed when missing and there is no Docker engine);
# docker: the compose profile. BUS_CLUSTER_MODE=local|docker forces one.
cluster_mode() {
  case "${BUS_CLUSTER_MODE:-auto}" in
    local | docker) echo "$BUS_CLUSTER_MODE" ;;
    auto)
      if [[ -x "$CLUSTER_RMQ_BIN/rabbitmq-server" ]] || ! docker_answers; then echo local; else echo docker; fi ;;
    *) die "BUS_CLUSTER_MODE must be local, docker or auto (got ${BUS_CLUSTER_MODE})" ;;
  esac
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "the nodes run as the rabbitmq user: run $(basename "$0") as root (e.g. with sudo)"
}

compose() { docker compose --profile cluster "$@"; }
