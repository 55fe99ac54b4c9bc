#!/usr/bin/env bash
# One `device` call of bench/distillation_table.py on a GPU machine, self-contained: installs the carried wheels
# (scripts/device/env.sh), trains into out/dt (ignored; it stays while the machine is warm, so a second call
# within ~30 s resumes there) and copies the table and the run logs to $OUT (8 files at most come back).
# Environment:
#   UNTIL   teacher | students | all (the table's --until; the magnetic-tile table takes two 600 s calls:
#           UNTIL=teacher first, the teacher alone, then RESUME=1 UNTIL=all, the students and the U-Net together)
#   DATA    a folder under .cache holding the data set (carry it; only the one needed: the 64 MiB limit):
#             .venv/bin/python bench/thin_defects.py --data ../shared/datasets/magnetic-tile --out .cache/thin  (9 MB)
#             cp -r ../shared/datasets/magnetic-tile .cache/mt                                                 (23 MB)
#   TB UB SB  teacher / U-Net / student time budgets in seconds (TB fits one call with ~60 s to spare; UB and SB run
#           side by side, followed by the evaluation: ~70 s on magnetic-tile with three flip rows); STUDENTS,
#           COMPILE, TSCALE, EXTRA, DEVICE optional
#   TSCALE  the teacher's pixel scale; the table keeps both canvases on the same region (student scale = TSCALE x
#           student size / teacher size), so TSCALE=2 with students at scale 1 needs EXTRA="--teacher-size 1024"
#   RESUME  set: stop (exit 4) unless an earlier call's teacher finished on this machine
# Example: run(command="UNTIL=teacher DATA=mt TB=520 bash scripts/device/table.sh", carry=[".whl", ".cache"]), then
#          run(command="RESUME=1 UNTIL=all DATA=mt UB=400 SB=400 bash scripts/device/table.sh", carry=[...])
set -euo pipefail
: "${UNTIL:?set UNTIL to teacher, students or all}"
: "${OUT:?run this through the device tool (it sets OUT)}"
# shellcheck source=scripts/device/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
work="$PWD/out/dt"
if [ -n "${RESUME:-}" ] && [ ! -f "$work/project/runs/teacher-finetune/checkpoints/best.pt" ]; then
  echo "no finished teacher in $work: this machine is not the warm one of the first call" >&2
  exit 4
fi
args=(--data "$PWD/.cache/${DATA:-thin}" --work "$work" --device "${DEVICE:-cuda}"
      --teacher-budget "${TB:-520}" --unet-budget "${UB:-400}" --student-budget "${SB:-400}"
      --teacher-epochs 100000 --unet-epochs 100000 --student-epochs 100000
      --students "${STUDENTS:-feature_aligned,supervised}" --teacher-scale "${TSCALE:-1}"
      --max-clicks 5 --skip-export --until "$UNTIL")
[ -n "${COMPILE:-}" ] && args+=(--compile "$COMPILE")
# shellcheck disable=SC2206
[ -n "${EXTRA:-}" ] && args+=($EXTRA)
set +e
python bench/distillation_table.py "${args[@]}" 2>&1 | tee "$OUT/$UNTIL.log"
rc=${PIPESTATUS[0]}
set -e
for f in table.md table.json interactive.json; do [ -f "$work/$f" ] && cp "$work/$f" "$OUT/"; done
(cd "$work" && tar czf "$OUT/logs-$UNTIL.tgz" --ignore-failed-read project/runs/*/metrics.jsonl ./*.yaml \
   commands.log* interactive.log 2>/dev/null) || true
exit "$rc"
