"""
A study in one command: several train.py runs that differ in a few settings, then one table and overlaid curves.

    python sweep.py config/sweeps/seed001_lr.py                   # its runs, one after another
    python sweep.py config/sweeps/seed001_norm.py --parallel=2    # two at a time, each on half the cores
    python sweep.py config/sweeps/seed001_lr.py --max_iters=100   # any train.py setting, for every run
    python sweep.py config/sweeps/seed001_lr.py --dry_run=True    # check and list the runs, train nothing
    python sweep.py config/sweeps/seed001_lr.py --restart=learning_rate=0.01   # train that run again

A sweep file is Python, like a config file (see config/sweeps/):
    \"\"\"The question the study asks (it heads summary.md).\"\"\"
    base = 'config/train_tinystories_cpu.py'  # a train.py config file; '' = train.py's defaults
    out_dir = 'out-sweeps/lr'                  # the sweep's directory: run <name> trains in out_dir/<name>
    overrides = {'max_iters': 300}             # train.py settings every run shares
    grid = {'learning_rate': [1e-3, 3e-3]}     # every combination is a run: 'learning_rate=0.001', ...
    runs = {'no-norm': {'norm': 'none'}}       # named runs; with a grid too, each is crossed with it
    target_val_loss = 3.5                      # optional: each run's time to this val loss (rundir.time_to_target)

Each run is a plain train.py process in out_dir/<name>, so sample.py, eval.py and report.py work on it. Every run
passes train.py's own checks (its dry run, in this process) before the first one starts: a typo costs one line, not
an hour. Rerunning skips finished runs (metrics.jsonl ends with 'done' or 'diverged'), resumes interrupted ones from
last.pt, retries failed ones, and refuses a run whose settings changed. Stopping the sweep (Ctrl-C, kill, even
kill -9) makes its runs save last.pt first. out_dir gets summary.md and summary.json (a row per run) and curves.png
(every run overlaid), rewritten atomically as each run ends; each run's directory gets sweep.json (settings, status,
wall time), train.log and train.err.
"""
import ctypes
import io
import itertools
import json
import math
import os
import re
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import time
import types
from contextlib import redirect_stdout

import matplotlib
matplotlib.use('Agg')  # files only: servers and CI have no display
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

import rundir
from configurator import configure, describe, one_line_errors, run_file, setting_keys

# -----------------------------------------------------------------------------
# settings of the sweep itself; every other --key=value is a train.py setting for every run
out_dir = ''     # the sweep's directory; '' = the out_dir its file names
parallel = 1     # runs at a time, each on threads // parallel CPU threads
threads = 0      # CPU threads to share out; 0 = OMP_NUM_THREADS when set, else every core we may use
dry_run = False  # check every run's settings, list the runs with their state and command, train nothing
restart = ''     # run names, separated by spaces, to train again from scratch (deleting their directory); 'all'
# -----------------------------------------------------------------------------
MINE = setting_keys(globals())
own_args = [a for a in sys.argv[1:] if a.startswith('-') and a.lstrip('-').partition('=')[0] in
            (*MINE, 'debug', 'h', 'help')]
configure(globals(), argv=own_args)
files = [a for a in sys.argv[1:] if not a.startswith('-')]
train_args = [a for a in sys.argv[1:] if a.startswith('-') and a not in own_args]  # passed on to every run
if len(files) != 1:
    raise ValueError("usage: python sweep.py config/sweeps/<study>.py [--key=value ...]: one sweep file, then "
                     "train.py settings or sweep.py's own (--help lists them)")
if parallel < 1 or threads < 0:
    raise ValueError(f"need parallel >= 1 and threads >= 0; got parallel={parallel}, threads={threads}")
sweep_path = files[0]
ROOT = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(ROOT, 'train.py')
cpus = threads or int(os.environ.get('OMP_NUM_THREADS') or 0) or (
    len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count())
run_threads = max(1, cpus // parallel)

# -----------------------------------------------------------------------------
# the sweep file: its own keys and their types; the train.py settings in it are train.py's to check
FILE_KEYS = {'base': str, 'out_dir': str, 'overrides': dict, 'grid': dict, 'runs': dict,
             'target_val_loss': (int, float, type(None))}
spec = {}
run_file(sweep_path, spec)  # its mistakes are one line naming the line
for k, v in spec.items():
    if k.startswith('_') or isinstance(v, (types.ModuleType, types.FunctionType, type)):
        continue  # imports and helpers a sweep file may use
    if k not in FILE_KEYS:
        raise ValueError(f"{sweep_path}: '{k}' is not a sweep setting; a sweep file sets {', '.join(FILE_KEYS)} "
                         "(train.py settings go in overrides, grid or runs)")
    if not isinstance(v, FILE_KEYS[k]) or type(v) is bool:
        raise ValueError(f"{sweep_path}: {k} must be a {'number' if k == 'target_val_loss' else FILE_KEYS[k].__name__}"
                         f", got {v!r}")
base, overrides, grid = spec.get('base', ''), spec.get('overrides', {}), spec.get('grid', {})
named, target = spec.get('runs', {}), spec.get('target_val_loss')
sweep_dir = out_dir or spec.get('out_dir') or \
    os.path.join('out-sweeps', os.path.splitext(os.path.basename(sweep_path))[0])
question = (spec.get('__doc__') or '').strip()
for k, vals in grid.items():
    if not isinstance(vals, (list, tuple)) or not vals:
        raise ValueError(f"{sweep_path}: grid['{k}'] must be a non-empty list of values, got {vals!r}")
for n, s in named.items():
    if not isinstance(n, str) or not n.strip() or not isinstance(s, dict):
        raise ValueError(f"{sweep_path}: runs maps names to settings, like {{'no-norm': {{'norm': 'none'}}}}; "
                         f"got {n!r}: {s!r}")
if base and not os.path.exists(base) and os.path.exists(os.path.join(ROOT, base)):
    base = os.path.join(ROOT, base)  # config/... works from any directory
cli_keys = [a[2:].partition('=')[0] for a in train_args]
varied = set(grid) | {k for s in named.values() for k in s}
for where, keys in [('overrides', overrides), ('grid', grid), *((f"runs['{n}']", s) for n, s in named.items()),
                    ('command line', cli_keys)]:
    for k in keys:
        if k in ('out_dir', 'init_from', 'dry_run'):
            hint = ', or pass --out_dir for the sweep' if k == 'out_dir' else ''
            raise ValueError(f"{where} sets {k}, which sweep.py sets for each run (out_dir/<run name>, resuming "
                             f"interrupted runs); drop it{hint}")
        if where == 'command line' and k in varied:
            raise ValueError(f"command line: --{k} is what this sweep varies; drop it, or edit {sweep_path}")


def train_config(argv):
    """What train.py makes of command line argv: its dry run checks the settings, data and model exactly as the
    run will, and describes the run (effective config, parameters); a ValueError/OSError says what it refuses."""
    out, real_argv = io.StringIO(), sys.argv
    sys.argv = [TRAIN, *argv, '--dry_run=True']  # what configure() reads
    try:
        with redirect_stdout(out):
            runpy.run_path(TRAIN, run_name='__main__')
    except SystemExit as e:  # the dry run's end (0), or a refusal
        if e.code:
            raise ValueError(str(e.code)) from None
    finally:
        sys.argv, sys.excepthook = real_argv, one_line_errors  # (train.py's configure() installs the same hook)
    return json.loads(out.getvalue().splitlines()[-1])


def arg(k, v):
    """A setting as train.py's command line takes it (configurator.parse keeps text as is for str settings)."""
    return f"--{k}={v if isinstance(v, str) else repr(v)}"


# -----------------------------------------------------------------------------
# the runs: named runs crossed with the grid, each checked by train.py's dry run before any starts
runs = []
for rname, rset in (list(named.items()) or [(None, {})]):
    for combo in (dict(zip(grid, vals)) for vals in itertools.product(*grid.values())):
        if set(rset) & set(combo):
            raise ValueError(f"{sweep_path}: run '{rname}' sets {', '.join(sorted(set(rset) & set(combo)))}, which "
                             "the grid varies; set it in one place")
        name = ','.join(([rname] if rname else []) + [f'{k}={v}' for k, v in combo.items()]) or 'base'
        name = re.sub(r'[^\w.=,+-]', '_', name, flags=re.ASCII).lstrip('.') or '_'  # a safe directory name
        if name in (r['name'] for r in runs):
            raise ValueError(f"{sweep_path}: two runs are named '{name}' (after making the names filesystem-safe); "
                             "rename one")
        settings = {**rset, **combo}
        argv = ([base] if base else []) + [arg(k, v) for k, v in overrides.items() if k not in cli_keys] + \
            train_args + [arg(k, v) for k, v in settings.items()]
        try:
            described = train_config(argv)
        except (ValueError, OSError) as e:  # a typo, a bad value, or data_dir not prepared
            raise ValueError(f"{sweep_path}, run '{name}': {describe(e)}") from None
        cfg = described['config']
        if not cfg['always_save_checkpoint']:  # valid for train.py, but the sweep promises to resume
            raise ValueError(f"{sweep_path}: always_save_checkpoint=False would leave an interrupted run nothing to "
                             "resume from; drop it")
        runs.append({'name': name, 'settings': settings, 'argv': argv, 'dir': os.path.join(sweep_dir, name),
                     'config': {k: v for k, v in cfg.items() if k not in ('out_dir', 'init_from', 'dry_run')},
                     'max_iters': cfg['max_iters'], 'time_budget': cfg['time_budget'], 'params': described['params'],
                     'tokens_per_iter': described['tokens_per_iter'],
                     'flops_per_token': described['flops_per_token'], 'proc': None})
names = [r['name'] for r in runs]
again = names if restart.strip() == 'all' else restart.split()
for n in again:
    if n not in names:
        raise ValueError(f"--restart: no run named '{n}' in {sweep_path}; its runs are {' '.join(names)}")


# -----------------------------------------------------------------------------
# what each run's directory holds

def saved(run):
    """The run's sweep.json, or None before it first started."""
    try:
        with open(os.path.join(run['dir'], 'sweep.json'), encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        raise ValueError(f"{run['dir']}/sweep.json is damaged; start that run over with --restart={run['name']}") \
            from None


def records(run):
    """The run's metrics.jsonl (a running run's last line, half written, is left for the next read)."""
    path = os.path.join(run['dir'], rundir.METRICS)
    return rundir.read_metrics(path) if os.path.isfile(path) else []


def state(run):
    """'new', 'resume', 'done' or 'diverged' (the last two are finished: skipped), or a list of changed settings."""
    info, found = saved(run), rundir.run_files(run['dir']) if os.path.isdir(run['dir']) else []
    if info is None and found:
        raise ValueError(f"{run['dir']} holds a run this sweep did not start; move it away, or train this run "
                         f"again with --restart={run['name']} (deletes it)")
    old, status = (info or {}).get('config', {}), row(run)['status']
    changed = [f"{k}={old[k]!r} then, {v!r} now" for k, v in run['config'].items() if k in old and old[k] != v]
    return changed or (status if status in ('done', 'diverged') else 'resume' if 'last.pt' in found else 'new')


def fmt_time(s):
    if s is None:
        return '-'
    if s < 10:
        return f'{s:.1f}s'
    s = int(round(s))
    return f'{s}s' if s < 60 else f'{s // 60}m{s % 60:02d}s' if s < 3600 else f'{s // 3600}h{s % 3600 // 60:02d}m'


def fmt_params(n):
    return f'{n / 1e6:.2f}M' if n >= 1e5 else f'{n / 1e3:.1f}k'


def finite(x):
    """JSON has no NaN or infinity: name them."""
    return x if not isinstance(x, float) or math.isfinite(x) else str(x)


def row(run):
    """The run's numbers, from its metrics.jsonl and sweep.json."""
    info, recs = saved(run) or {}, records(run)
    evals = [r for r in recs if r['kind'] == 'eval']
    best = min([r for r in evals if r['iter'] > 0] or evals, key=lambda r: r['val_loss'], default={})  # not step 0
    final = evals[-1] if evals else {}
    progress = max((r for r in recs if r['kind'] in ('train', 'eval')), key=lambda r: r['iter'], default={})
    end = recs[-1] if recs and recs[-1]['kind'] in ('done', 'diverged') else None
    status = 'running' if run['proc'] is not None else end['kind'] if end else \
        info.get('status') if info.get('status') in ('failed', 'interrupted') else 'interrupted' if recs else 'pending'
    iters, tokens, t = progress.get('iter', 0), progress.get('tokens', 0), progress.get('time')
    if end:  # the end record knows best: a diverged run completed the steps before its failing one
        iters = end['iter'] - (end['kind'] == 'diverged')
        tokens, t = iters * run['tokens_per_iter'], end.get('time', t)
    reach = {k: rundir.time_to_target(evals, target, k) if target is not None else None for k in ('time', 'tokens')}
    return {'run': run['name'], 'status': status, 'settings': run['settings'], 'params': run['params'],
            'iters': iters, 'max_iters': run['max_iters'], 'tokens': tokens,
            'train_time_s': t, 'wall_time_s': info.get('wall'), 'tokens_per_s': tokens / t if t else None,
            'best_val_loss': best.get('val_loss'), 'best_val_bpb': best.get('val_bpb'), 'best_iter': best.get('iter'),
            'final_val_loss': final.get('val_loss'), 'final_val_bpb': final.get('val_bpb'),
            'time_to_target_s': reach['time'], 'tokens_to_target': reach['tokens'],
            'diverged_at': {'iter': end['iter'], 'loss': finite(end['loss'])} if status == 'diverged' else None,
            'error': info.get('error') if status in ('failed', 'diverged') else None, 'out_dir': run['dir']}


def eta(to_train):
    """Seconds until the runs to_train end, from their budgets and the speed measured so far (training FLOP/s, and
    wall time over training time for the rest); None before anything has been measured."""
    rows = {run['name']: row(run) for run in runs}
    timed = [(run, rows[run['name']]) for run in runs if rows[run['name']]['train_time_s']]
    secs = sum(r['train_time_s'] for _, r in timed)
    rate = sum(run['flops_per_token'] * r['tokens'] for run, r in timed) / secs if secs else 0
    ended = [r for _, r in timed if r['wall_time_s'] and r['status'] != 'running']
    overhead = sum(r['wall_time_s'] for r in ended) / sum(r['train_time_s'] for r in ended) if ended else 1.2
    left = []
    for run in to_train:
        r = rows[run['name']]
        flops = run['flops_per_token'] * (run['max_iters'] * run['tokens_per_iter'] - r['tokens'])
        todo = [flops / rate] if rate else []
        todo += [run['time_budget'] - (r['train_time_s'] or 0)] if run['time_budget'] > 0 else []
        left.append(max(min(todo), 0) if todo else None)
    return None if None in left else sum(left) * overhead / parallel  # overhead: startup, evaluation, checkpoints


# -----------------------------------------------------------------------------
# the summary: a table (Markdown and JSON) and overlaid curves

def plot(path, rows):
    """Every run overlaid: val loss vs tokens and vs training time, train loss vs step."""
    minutes = max((r['train_time_s'] or 0 for r in rows), default=0) > 120  # else seconds
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.4), layout='constrained')
    handles, shown = [], [[], [], []]  # shown: the losses each panel's y-range fits
    for i, (run, r) in enumerate(zip(runs, rows)):
        recs = records(run)
        evals = [x for x in recs if x['kind'] == 'eval']
        curves = ([(x['tokens'] / 1e6, x['val_loss']) for x in evals],
                  [(x['time'] / (60 if minutes else 1), x['val_loss']) for x in evals],
                  [(x['iter'], x['loss']) for x in recs if x['kind'] == 'train'])
        style = dict(color=plt.get_cmap('tab10')(i % 10), ls=['-', '--', ':', '-.'][i // 10 % 4], lw=1.6)
        for k, pts in enumerate(curves):
            if pts:
                xs, ys = zip(*pts)
                axes[k].plot(xs, ys, marker='o' if k < 2 else None, ms=2.5, **style)
                if r['status'] == 'diverged':  # where it ended
                    axes[k].plot(xs[-1], ys[-1], marker='x', ms=9, mew=2, color=style['color'])
                # not the untrained start (the first eval, the first steps): it would dwarf the differences
                shown[k] += [y for x, y in pts if x > (xs[0] if k < 2 else 0.1 * xs[-1]) and math.isfinite(y)]
        if any(curves):
            label = run['name'] + ('' if r['status'] == 'done' else f" ({r['status']})")
            handles.append(Line2D([], [], label=label, **style))
    for k, (ax, ys, (title, xlabel, ylabel)) in enumerate(zip(axes, shown, [
            ('val loss vs tokens', 'tokens trained (millions)', 'val loss (nats/token)'),
            ('val loss vs training time', f"training time ({'minutes' if minutes else 'seconds'}; evaluation "
             "excluded)", 'val loss (nats/token)'),
            ('train loss vs step', 'step', 'train loss (batch)')])):
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        if ys:
            pad = 0.05 * (max(ys) - min(ys)) or 0.1
            ax.set_ylim(min(ys) - pad, max(ys) + pad)
        if target and k < 2:
            ax.axhline(target, color='grey', ls=':', lw=1)
    if handles:
        fig.legend(handles=handles, loc='outside lower center', ncol=min(len(handles), 4), fontsize=10)
    fig.suptitle(f"{sweep_dir}: {len(handles)} run{'s' if len(handles) != 1 else ''}"
                 + (f' (dotted: the target val loss {target})' if target else ''))
    with rundir.atomic_open(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=100)
    plt.close(fig)


def write_summary():
    rows = [row(run) for run in runs]
    command = 'python sweep.py ' + ' '.join(map(shlex.quote, sys.argv[1:]))
    rundir.write_json(os.path.join(sweep_dir, 'summary.json'), {
        'sweep': sweep_path, 'question': question, 'command': command, 'base': spec.get('base', ''),
        'overrides': overrides, 'command_line': train_args, 'target_val_loss': target,
        'updated': time.strftime('%Y-%m-%d %H:%M:%S'), 'runs': [{k: finite(v) for k, v in r.items()} for r in rows]})
    plot(os.path.join(sweep_dir, 'curves.png'), rows)
    head = ['run', 'settings', 'status', 'params', 'iters', 'tokens', 'train time', 'wall', 'tok/s', 'best val loss',
            'best bpb', 'final val loss', 'final bpb'] + ['time to target'] * bool(target)
    table = [[r['run'], ' '.join(f'{k}={v}' for k, v in r['settings'].items()) or '-', r['status'],
              fmt_params(r['params']), f"{r['iters']}/{r['max_iters']}", f"{r['tokens']:,}",
              fmt_time(r['train_time_s']), fmt_time(r['wall_time_s']), rundir.fmt(r['tokens_per_s'], ',.0f'),
              *(rundir.fmt(r[k]) for k in ('best_val_loss', 'best_val_bpb', 'final_val_loss', 'final_val_bpb')),
              *[fmt_time(r['time_to_target_s'])] * bool(target)] for r in rows]
    notes = [f"- `{r['run']}` {r['status']}" + (f" at step {r['diverged_at']['iter']} (loss {r['diverged_at']['loss']})"
                                                 if r['diverged_at'] else '') +
             "; its last good numbers are above" + (f"; it said: `{r['error']}`" if r['error'] else '')
             for r in rows if r['status'] in ('diverged', 'failed')]
    finished = sum(r['status'] in ('done', 'diverged') for r in rows)
    md = [f'# Sweep {sweep_path}', '', question, '',
          f"`{command}`: base `{spec.get('base') or 'train.py defaults'}`, shared settings "
          f"`{' '.join([arg(k, v) for k, v in overrides.items()] + train_args) or 'none'}`"
          + (f', target val loss {target}' if target else '') + '.',
          f"{finished} of {len(rows)} runs finished ({time.strftime('%Y-%m-%d %H:%M')}). Times are training time "
          "(evaluation and checkpoints excluded) and the wall time of the train.py processes; the time to target is "
          "interpolated between the evaluations around the crossing.", '',
          *rundir.markdown_table(head, table), '', *notes, *[''] * bool(notes),
          '![val loss vs tokens and time, train loss vs step](curves.png)', '']
    rundir.write_text(os.path.join(sweep_dir, 'summary.md'), '\n'.join(md))
    return rows


# -----------------------------------------------------------------------------
# check the directories, then train
if not dry_run:
    lock = rundir.lock(sweep_dir)  # the sweep's directory is ours until we exit: a second sweep is refused
states = {run['name']: 'restart' if run['name'] in again else state(run) for run in runs}
print(f"sweep {sweep_path}: {len(runs)} runs in {sweep_dir}, {parallel} at a time on {run_threads} "
      f"thread{'s' if run_threads > 1 else ''} each")
for run in runs if dry_run else []:
    s = states[run['name']]
    print(f"  {run['name']}: {'changed: ' + '; '.join(s) if isinstance(s, list) else s}, "
          f"{run['params']:,} parameters, {run['max_iters']} iters x {run['tokens_per_iter']:,} tokens"
          f"\n    python train.py {' '.join(map(shlex.quote, run['argv']))} --out_dir={run['dir']}")
changed = [n for n, s in states.items() if isinstance(s, list)]
if changed:
    n = changed[0]
    raise ValueError(f"run '{n}' in {sweep_dir}/{n} was trained with other settings ({'; '.join(states[n])})"
                     f"{f' (and {len(changed) - 1} more runs)' if len(changed) > 1 else ''}; to train it again "
                     f"pass --restart={n} (deletes it), or --out_dir=<a new directory> to keep both")
if dry_run:
    raise SystemExit(0)
for run in runs:
    if states[run['name']] == 'restart':
        shutil.rmtree(run['dir'], ignore_errors=True)
        states[run['name']] = 'new'
todo = [run for run in runs if states[run['name']] in ('new', 'resume')]
skipped = [n for n, s in states.items() if s in ('done', 'diverged')]
if skipped:
    print(f"{len(skipped)} finished before, skipped: {' '.join(skipped)}")
write_summary()


def launch(run, k):
    """Start the run's train.py (the sweep's k-th), its output appended to train.log and train.err."""
    resume = states[run['name']] == 'resume'  # else train.py replaces what a run killed before its 1st checkpoint left
    cmd = [sys.executable, TRAIN, *run['argv'], f"--out_dir={run['dir']}",
           *(['--init_from=resume'] if resume else ['--overwrite=True', '--init_from=scratch'])]
    os.makedirs(run['dir'], exist_ok=True)
    rundir.write_json(f"{run['dir']}/sweep.json", {'settings': run['settings'], 'wall': 0.0, **(saved(run) or {}),
                                                   'config': run['config'], 'argv': cmd[2:], 'status': 'running'})
    env = {**os.environ, 'OMP_NUM_THREADS': str(run_threads), 'MKL_NUM_THREADS': str(run_threads),
           'PYTHONUNBUFFERED': '1'}
    with open(f"{run['dir']}/train.log", 'a') as out, open(f"{run['dir']}/train.err", 'a') as err:
        out.write(f"\n$ {' '.join(map(shlex.quote, cmd))}\n")
        out.flush()
        # Its own session: a Ctrl-C in the terminal reaches only the sweep, which stops each run exactly once. And
        # PR_SET_PDEATHSIG: SIGTERM when the sweep dies, even by kill -9, so the run saves last.pt and exits instead
        # of training on beside the rerun that resumes it.
        run.update(k=k, err_from=err.tell(), started=time.time(), proc=subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, start_new_session=True,
            preexec_fn=(lambda: ctypes.CDLL(None).prctl(1, signal.SIGTERM)) if sys.platform == 'linux' else None))
    recs = records(run)
    run['seen'] = len(recs)
    at = f"resuming at iter {recs[-1]['iter']}" if resume and recs else 'starting'
    print(f"[{k}/{len(todo)}] {run['name']}: {at} ({fmt_params(run['params'])} parameters, {run['max_iters']} iters), "
          f"log in {run['dir']}/train.log", flush=True)


def finish(run, stopping=False):
    """Record in sweep.json how the run's train.py ended, and say it."""
    rc, wall, run['proc'] = run['proc'].returncode, time.time() - run['started'], None
    recs = records(run)
    status = recs[-1]['kind'] if recs and recs[-1]['kind'] in ('done', 'diverged') else \
        'interrupted' if stopping or rc == 0 else 'failed'
    with open(f"{run['dir']}/train.err", errors='replace') as f:
        f.seek(run['err_from'])
        said = [line.strip() for line in f.read().splitlines() if line.strip()]
    error = said[-1] if said else f'killed by {signal.Signals(-rc).name}' if rc < 0 else f'exit status {rc}'
    info = saved(run)
    rundir.write_json(f"{run['dir']}/sweep.json", {**info, 'status': status, 'wall': info['wall'] + wall,
                                                   'error': error if status in ('failed', 'diverged') else None})
    r = row(run)
    print(f"[{run['k']}/{len(todo)}] {run['name']} {status}: {r['iters']} iters, {r['tokens'] / 1e6:.2f}M tokens in "
          f"{fmt_time(r['train_time_s'])} ({rundir.fmt(r['tokens_per_s'], ',.0f')} tok/s), val loss "
          f"{rundir.fmt(r['final_val_loss'])} (best {rundir.fmt(r['best_val_loss'])}, "
          f"{rundir.fmt(r['best_val_bpb'], '.3f')} bpb)" + (f": {error}" if status == 'failed' else '')
          + (f" | {len(pending) + len(running)} to go, eta {fmt_time(eta(pending + running))}"
             if pending or running else ''), flush=True)


def progress(run):
    """A line at each new evaluation of a running run."""
    recs = records(run)
    for r in recs[run['seen']:]:
        if r['kind'] == 'eval':
            print(f"    {run['name']}: iter {r['iter']}/{run['max_iters']}, val loss {r['val_loss']:.4f}, "
                  f"{fmt_time(r['time'])} | sweep eta {fmt_time(eta(pending + running))}", flush=True)
    run['seen'] = max(run['seen'], len(recs))


signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill: stop as on Ctrl-C (raises KeyboardInterrupt)
pending, running, t0 = list(todo), [], time.time()
try:
    while pending or running:
        while pending and len(running) < parallel:
            running.append(pending.pop(0))
            launch(running[-1], len(todo) - len(pending))
        time.sleep(0.2)
        for run in list(running):
            progress(run)
            if run['proc'].poll() is not None:
                running.remove(run)
                finish(run)
                write_summary()
except KeyboardInterrupt:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"\nstopping: {len(running)} run{'s' if len(running) != 1 else ''} saving last.pt...", file=sys.stderr)
    for run in running:
        run['proc'].send_signal(signal.SIGTERM)  # train.py finishes its step, saves last.pt and exits
    while any(run['proc'].poll() is None for run in running):
        try:
            time.sleep(0.2)
        except KeyboardInterrupt:  # asked twice: train.py stops at once on a second signal
            for run in running:
                if run['proc'].poll() is None:
                    run['proc'].send_signal(signal.SIGTERM)
    stopped, running, pending = running, [], []
    for run in stopped:
        finish(run, stopping=True)
    write_summary()
    print(f"interrupted; rerun the same command to go on ({sweep_dir}/summary.md has what finished)", file=sys.stderr)
    sys.exit(130)
rows = write_summary()
failed = [r['run'] for r in rows if r['status'] == 'failed']
print(f"{len(todo)} run{'s' if len(todo) != 1 else ''} in {fmt_time(time.time() - t0)}; "
      f"summary: {sweep_dir}/summary.md, curves: {sweep_dir}/curves.png")
if failed:
    raise ValueError(f"{len(failed)} of {len(rows)} runs failed ({' '.join(failed)}): summary.md has each one's error; "
                     "rerun the same command to retry them")
