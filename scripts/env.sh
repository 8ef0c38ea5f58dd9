# Sourced by the scripts: point retrieval-kd at the shared offline data when it is beside the repo.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${RKD_DATA_HOME:-}" ] && [ -d "$_root/../shared/datasets" ]; then
  export RKD_DATA_HOME="$(cd "$_root/../shared/datasets" && pwd)"
fi
export PATH="$_root/.venv/bin:$PATH"
