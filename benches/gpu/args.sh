# The arguments the GPU scripts share, sourced by them: the tigerflow binary ($1) and the directory of a random
# SmolLM2-135M-shaped model ($2), made on first use (the GPU machines cannot download the real one).
tf=${1:-target/release/tigerflow}
model=${2:-/tmp/smollm2-random}
[ -f "$model/config.json" ] || python3 "$(dirname "${BASH_SOURCE[0]}")/random_model.py" smollm2-135m "$model"
