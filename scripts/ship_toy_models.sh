#!/usr/bin/env bash
# Turn a toy-teacher pretraining state into the files the pack ships, with their measurements:
#   1. the compact EMA teacher   trainer/toy/assets/toy_wan_teacher.safetensors   (toy export)
#      and its raw weights       trainer/toy/assets/toy_wan_teacher_raw.safetensors (toy export --weights model:
#      what the next run continues from with --init-from)
#   2. the teacher's reference   trainer/toy/assets/teacher_reference.json (bench sampling's teacher rows,
#      which the main job's report reuses instead of sampling 96 clips at 50 steps again; recorded
#      before the main job for a new teacher, and again by step 4 either way)
#   3. the 4-step student LoRA   trainer/toy/assets/loras/stride_toy_student_4step.safetensors
#      made by the README's main job (python -m trainer distill, no arguments; report in runs/distill/)
#   4. bench sampling on both    runs/ship/bench_sampling.json
#   5. the teacher's model card  trainer/toy/assets/TOY_TEACHER.md (from 1, the pretraining logs and 3)
#
#   bash scripts/ship_toy_models.sh STATE_DIR "TRAIN COMMAND" LOG.jsonl...
# STATE_DIR: the pretraining state folder ("-" keeps the shipped teacher); TRAIN COMMAND: how that state was trained, as written on
# the card; LOG.jsonl: the log of every run in the teacher's lineage, oldest first. CARD_NOTES (environment): the card's lineage paragraph.
# PRIOR_HOURS and PRIOR_RUNS (environment): earlier runs of the lineage whose logs are gone, as the previous card counts them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
state_dir=$1; train_command=$2; shift 2
assets=trainer/toy/assets
mkdir -p runs/ship "$assets/loras"

if [ "$state_dir" != "-" ]; then  # "-": keep the shipped teacher (and its recorded rows), ship a new student
    $PY -m trainer toy export --state-dir "$state_dir" --out "$assets/toy_wan_teacher.safetensors"
    $PY -m trainer toy export --state-dir "$state_dir" --weights model --out "$assets/toy_wan_teacher_raw.safetensors"
    $PY -m trainer bench sampling --lora none --save-reference "$assets/teacher_reference.json" --json \
        > runs/ship/bench_teacher.json
fi
# the main job, from scratch (a previous run of the same name must not be resumed against a new teacher)
/usr/bin/time -v $PY -m trainer distill --no-resume --json > runs/ship/distill.json 2> runs/ship/distill.time
cp runs/distill/toy_adv.safetensors "$assets/loras/stride_toy_student_4step.safetensors"
$PY -m trainer bench sampling --save-reference "$assets/teacher_reference.json" --json > runs/ship/bench_sampling.json
$PY -m trainer toy card --weights "$assets/toy_wan_teacher.safetensors" --logs "$@" \
    --eval runs/ship/bench_sampling.json --command "$train_command" --notes "${CARD_NOTES:-}" \
    --prior-hours "${PRIOR_HOURS:-0}" --prior-runs "${PRIOR_RUNS:-0}" \
    --out "$assets/TOY_TEACHER.md"
grep -E "Elapsed|Maximum resident" runs/ship/distill.time
