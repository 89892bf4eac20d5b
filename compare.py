"""
Compare recipes trained with several seeds, as a sweep of variants x seeds leaves them (config/sweeps/recipe.py):

    python compare.py --runs=out-sweeps/recipe                     # the reference group is 'baseline'
    python compare.py --runs=out-sweeps/recipe --target=3.3        # time to this val loss instead

Every finished run under `runs` (a directory whose metrics.jsonl ends with a 'done' record) counts; runs are grouped
by their name without its seed ('muon,seed=2' -> 'muon'). Per group, the mean and spread (min..max) over its runs of:
  - val bpb: the exact bits per byte of the run's best.pt over the whole val split, from its eval.json (eval.py runs
    when there is none newer than best.pt);
  - steps and seconds per step of training (evaluation and checkpoints excluded);
  - time to target: training seconds until the val loss reaches the target (rundir.time_to_target, as train.py and
    sweep.py measure it), over the runs that reach it. The target is the reference group's mean final val loss
    unless --target is given. 'x ref' divides it by the reference's time: its mean training time (it reaches its
    own final loss at its end, so its x ref is 1), or with --target its mean time to that target.
Prints the table (Markdown, as README's recipe table) and writes <runs>/compare.json.
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
configure(globals())
if not os.path.isdir(runs):
    raise ValueError(f"--runs={runs!r} is not a folder; point it at a sweep's out_dir, e.g. out-sweeps/recipe")
if target < 0:
    raise ValueError(f"--target={target} must be a val loss > 0, or 0 for the reference's mean final val loss")
EVAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'eval.py')


def val_bpb(folder):
    """Exact val bits per byte of folder/best.pt: its eval.json when that scored this best.pt on the val split, else
    eval.py's (which writes a new one)."""
    best, result = os.path.join(folder, 'best.pt'), os.path.join(folder, 'eval.json')
    try:
        with open(result, encoding='utf-8') as f:
            found = json.load(f)
        if os.path.getmtime(result) >= os.path.getmtime(best) and found['split'] == 'val' and \
                os.path.basename(found['checkpoint']) == 'best.pt':
            return found['bpb']
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or not one we can use: evaluate again
        pass
    print(f"{folder}: eval.py over the whole val split...", flush=True)
    if subprocess.run([sys.executable, EVAL, f'--out_dir={folder}', '--ckpt=best', '--split=val', f'--device={device}',
                       '--dtype=float32']).returncode:
        raise ValueError(f"eval.py failed on {folder}/best.pt (its error is above); fix that run or move it away")
    with open(result, encoding='utf-8') as f:
        return json.load(f)['bpb']


def spread(xs):
    """(mean, min, max) of the values that are not None; None if there are none."""
    xs = [x for x in xs if x is not None]
    return (sum(xs) / len(xs), min(xs), max(xs)) if xs else None


def cell(s, fmt, unit=''):
    """'mean (min..max)' for a spread, just the mean when all agree (one run)."""
    return f"{s[0]:{fmt}}{unit}" + (f" ({s[1]:{fmt}}..{s[2]:{fmt}})" if s[1] != s[2] else '')


groups = {}
for name in sorted(os.listdir(runs)):
    folder, metrics = os.path.join(runs, name), os.path.join(runs, name, rundir.METRICS)
    recs = rundir.read_metrics(metrics) if os.path.isfile(metrics) else []
    evals = [r for r in recs if r['kind'] == 'eval']
    if not recs or recs[-1]['kind'] != 'done' or not evals or not os.path.isfile(os.path.join(folder, 'best.pt')):
        if os.path.isdir(folder):
            print(f"{name}: not a finished run with a best.pt, left out")
        continue
    group = re.sub(r'(^|,)seed=[^,]*', '', name).strip(',') or 'base'
    groups.setdefault(group, []).append({'run': name, 'final_val_loss': evals[-1]['val_loss'],
                                         'steps': recs[-1]['iter'], 'time': recs[-1]['time'], 'evals': evals})
if not groups:
    raise ValueError(f"no finished runs in {runs}; point --runs at a sweep's out_dir whose runs have ended")
if reference not in groups and not target:
    raise ValueError(f"no finished runs of the reference group {reference!r} in {runs} (groups: {', '.join(groups)}); "
                     f"pass --reference=<one of them> or --target=<a val loss>")

goal = target or spread([r['final_val_loss'] for r in groups[reference]])[0]
for members in groups.values():  # the settings are sound: now the slow part
    for r in members:
        r['time_to_target'] = rundir.time_to_target(r.pop('evals'), goal)
        r['bpb'] = val_bpb(os.path.join(runs, r['run']))
own = groups.get(reference, [])
ref_time = spread([r['time' if not target else 'time_to_target'] for r in own])
ref_time = ref_time and ref_time[0]
table, rows = {}, []
for group, members in groups.items():
    bpb, reached = spread([r['bpb'] for r in members]), spread([r['time_to_target'] for r in members])
    steps, seconds = spread([r['steps'] for r in members])[0], spread([r['time'] for r in members])[0]
    n = sum(r['time_to_target'] is not None for r in members)
    x_ref = 1.0 if group == reference and not target else reached[0] / ref_time if reached and ref_time else None
    table[group] = {'runs': members, 'bpb': bpb, 'steps': steps, 's_per_step': seconds / max(steps, 1),
                    'time_to_target': reached, 'reached': n, 'x_ref': x_ref}
    when = 'never' if not reached else cell(reached, '.0f', ' s') + ('' if n == len(members) else
                                                                      f", {n} of {len(members)} runs")
    rows.append([group, len(members), cell(bpb, '.4f'), f'{steps:.0f}', f'{seconds / max(steps, 1):.2f}', when,
                 rundir.fmt(x_ref, '.2f')])
print(f"\ntarget val loss {goal:.4f} ({'given' if target else f'the mean final val loss of {reference!r}'})\n")
print('\n'.join(rundir.markdown_table(['recipe', 'runs', 'val bpb, mean (min..max)', 'steps', 's/step',
                                       f'time to {goal:.3f}, mean (min..max)', 'x ref'], rows)))
rundir.write_json(os.path.join(runs, 'compare.json'), {'target_val_loss': goal, 'reference': reference,
                                                       'reference_time': ref_time, 'groups': table})
print(f"\nwrote {os.path.join(runs, 'compare.json')}")
