"""
Compare recipes trained with several seeds, as a sweep of variants x seeds leaves them (config/sweeps/recipe.py):

    python compare.py --runs=out-sweeps/recipe                     # the reference group is 'baseline'
    python compare.py --runs=out-sweeps/recipe --target=3.3        # time to this val loss instead

Every directory under `runs` with a metrics.jsonl is a run; runs are grouped by their name without its seed
('muon,seed=2' -> 'muon'). For each group, mean and spread (min..max) over its runs of:
  - val bpb: the exact bits per byte of the run's best.pt over the whole val split, by eval.py (its eval.json
    is reused while it is newer than best.pt);
  - time to target: training seconds (evaluation and checkpoints excluded) until train.py's val loss first
    reaches the target, interpolated between the two evaluations around the crossing. The target is the
    reference group's mean final val loss unless --target is given; 'x ref' divides it by the reference
    group's mean training time, so 0.4 means the reference's final loss was reached in 40% of its time.
Prints a markdown table and writes <runs>/compare.json.
"""
import json
import os
import re
import subprocess
import sys

import rundir
from configurator import configure

# -----------------------------------------------------------------------------
runs = ''               # the folder holding the run directories (a sweep's out_dir)
reference = 'baseline'  # the group whose mean final val loss is the target and whose time is 1x
target = 0.0            # > 0: reach this val loss instead of the reference's
device = 'cpu'          # where eval.py runs
# -----------------------------------------------------------------------------
config = configure(globals())
if not os.path.isdir(runs):
    raise ValueError(f"--runs={runs!r} is not a folder; point it at a sweep's out_dir, e.g. out-sweeps/recipe")


def crossing(evals, loss):
    """Training seconds at which the val loss first reaches `loss`, linear between evaluations; None if never."""
    for before, r in zip([None] + evals, evals):
        if r['val_loss'] <= loss:
            if before is None:
                return r['time']
            f = (before['val_loss'] - loss) / (before['val_loss'] - r['val_loss'])
            return before['time'] + f * (r['time'] - before['time'])
    return None


def spread(xs):
    xs = [x for x in xs if x is not None]
    return (sum(xs) / len(xs), min(xs), max(xs)) if xs else None


groups = {}
for name in sorted(os.listdir(runs)):
    folder = os.path.join(runs, name)
    if not os.path.isfile(os.path.join(folder, rundir.METRICS)):
        continue
    best, result = os.path.join(folder, 'best.pt'), os.path.join(folder, 'eval.json')
    if not os.path.isfile(best):
        print(f"{name}: no best.pt yet, left out")
        continue
    if not os.path.isfile(result) or os.path.getmtime(result) < os.path.getmtime(best):
        print(f"{name}: eval.py over the whole val split...", flush=True)
        subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'eval.py'),
                        f'--out_dir={folder}', f'--device={device}', '--dtype=float32'], check=True)
    with open(result) as f:
        bpb = json.load(f)['bpb']
    evals = [r for r in rundir.read_metrics(os.path.join(folder, rundir.METRICS)) if r['kind'] == 'eval']
    group = re.sub(r'(^|,)seed=[^,]*', '', name).strip(',') or 'base'
    groups.setdefault(group, []).append({'run': name, 'bpb': bpb, 'final_val_loss': evals[-1]['val_loss'],
                                         'iters': evals[-1]['iter'], 'time': evals[-1]['time'], 'evals': evals})
if reference not in groups and not target:
    raise ValueError(f"no runs of the reference group {reference!r} in {runs} (groups: {', '.join(groups)}); "
                     f"pass --reference=<one of them> or --target=<a val loss>")

goal = target or spread([r['final_val_loss'] for r in groups[reference]])[0]
ref_time = spread([r['time'] for r in groups[reference]])[0] if reference in groups else None
print(f"\ntarget val loss {goal:.4f} ({'given' if target else f'the mean final val loss of {reference!r}'})\n")
print('| recipe | runs | val bpb, mean (min..max) | steps | s/step | time to target, s (min..max) | x ref |')
print('| --- | --- | --- | --- | --- | --- | --- |')
table = {}
for group, members in groups.items():
    for r in members:
        r['time_to_target'] = crossing(r['evals'], goal)
        del r['evals']
    bpb, reached = spread([r['bpb'] for r in members]), spread([r['time_to_target'] for r in members])
    steps, seconds = spread([r['iters'] for r in members])[0], spread([r['time'] for r in members])[0]
    n_reached = sum(r['time_to_target'] is not None for r in members)
    ratio = reached[0] / ref_time if reached and ref_time else None
    table[group] = {'runs': members, 'bpb': bpb, 'time_to_target': reached, 'reached': n_reached, 'x_ref': ratio}
    when = f'{reached[0]:.0f} ({reached[1]:.0f}..{reached[2]:.0f})' if reached else 'never'
    when += '' if n_reached == len(members) else f', {n_reached} of {len(members)} runs'
    print(f"| {group} | {len(members)} | {bpb[0]:.4f} ({bpb[1]:.4f}..{bpb[2]:.4f}) | {steps:.0f} | "
          f"{seconds / max(steps, 1):.2f} | {when} | {f'{ratio:.2f}' if ratio else '-'} |")
rundir.write_json(os.path.join(runs, 'compare.json'), {'target_val_loss': goal, 'reference': reference,
                                                       'reference_time': ref_time, 'groups': table})
print(f"\nwrote {os.path.join(runs, 'compare.json')}")
