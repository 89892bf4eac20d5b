"""
Run directories (train.py's out_dir, prepare.py's out_dir, a sweep's directory) and the files in them.

Three promises, kept here once for every script:
- One writer at a time. lock(dir) takes an exclusive flock on dir/.lock for the life of the process; a
  second process asking for it fails at once with a message naming the holder. The OS drops the lock when
  the holder exits, however it exits (kill -9 included), so a lock is never left stale.
- No half-written files. atomic_open(path) writes to a temporary file named after path and this process,
  flushes it to disk, then renames it over path in one step: a reader, a crash or a full disk leaves either
  the old file or the new one, never a mix, and the temporary file is removed on every failure path.
- Nothing of value is overwritten by accident. run_files(dir) lists what a training run left in dir, so
  claim() refuses a fresh run there.
Also the one reader of metrics.jsonl and the one definition of what it measures: time_to_target.
"""
import contextlib
import errno
import glob
import json
import os
import re
import sys

from configurator import describe

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected from each other
    fcntl = None

LOCK = '.lock'
CHECKPOINTS = ('last.pt', 'best.pt')
METRICS = 'metrics.jsonl'


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


def lock(directory):
    """Make directory (if needed) and hold it for this process until it exits. Returns the open lock file:
    keep a reference to it (closing it releases the lock). BlockingIOError if another process holds it."""
    os.makedirs(directory, exist_ok=True)
    if fcntl is None:
        return None
    f = open(os.path.join(directory, LOCK), 'a+')
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or 'another process'
        f.close()
        raise BlockingIOError(errno.EWOULDBLOCK, f"{directory} is in use by {holder}; wait for it to finish "
                              "or stop it, or choose another directory") from None
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()} ({' '.join(['python'] + sys.argv)})\n")
    f.flush()
    # Temporary files of writers that died (kill -9, power loss) are garbage now that we own the directory.
    for tmp in glob.glob(os.path.join(glob.escape(directory), '*.tmp')):
        m = re.search(r'\.(\d+)\.tmp$', tmp)
        if m and not _alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.remove(tmp)
    return f


@contextlib.contextmanager
def atomic_open(path, mode='w', **kwargs):
    """Open a file for writing that appears at path only when complete (see the module's docstring).
    On any failure path keeps its old content (or stays absent) and an OSError names it."""
    tmp = f'{path}.{os.getpid()}.tmp'  # unique to this process: concurrent writers never share one
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename, so a power cut cannot leave an empty file
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):
            e.filename = os.fspath(path)  # a failed write() names no file; say which one the user was writing
        raise


def write_text(path, text):
    with atomic_open(path, 'w', encoding='utf-8') as f:
        f.write(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + '\n')


def find_checkpoint(out_dir, ckpt):
    """ckpt 'best' | 'last' (out_dir/best.pt, out_dir/last.pt) | a file name in out_dir | any path -> the path.
    FileNotFoundError, saying what to do, when there is no such file."""
    if ckpt in ('best', 'last'):
        path = os.path.join(out_dir, ckpt + '.pt')
    else:
        inside = os.path.join(out_dir, ckpt)
        path = inside if os.path.exists(inside) else ckpt
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}; train one (python train.py --out_dir={out_dir}) "
                                "or point --out_dir/--ckpt at an existing one")
    return path


def read_metrics(path):
    """The records of a metrics.jsonl, in order. A last line cut short (a crash while appending) is dropped;
    a damaged line anywhere else is a ValueError naming it."""
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = f.read().split('\n')
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or 'kind' not in rec or 'iter' not in rec:
                raise ValueError('not a metrics record')
        except ValueError:
            if n == len(lines):  # the file does not end in a newline: this line was being written
                break
            raise ValueError(f"{path} line {n} is damaged (not a metrics record); delete that line or the file "
                             "and run again") from None
        records.append(rec)
    return records


def run_files(out_dir):
    """The files of value a training run left in out_dir: checkpoints, and a metrics log with records."""
    found = [name for name in CHECKPOINTS if os.path.isfile(os.path.join(out_dir, name))]
    metrics = os.path.join(out_dir, METRICS)
    if os.path.isfile(metrics) and os.path.getsize(metrics) > 0:
        found.append(METRICS)
    return found


def claim(out_dir, resume_at=None, overwrite=False):
    """Take out_dir for a training run -> (its lock, the metrics records to keep), writing nothing. A fresh run
    (resume_at None) refuses a directory that holds another run unless overwrite; a resumed one keeps the records
    up to its checkpoint's iteration resume_at (later ones, a crash's or a finished run's end, go)."""
    held = lock(out_dir)
    found = run_files(out_dir)
    if resume_at is None and found and not overwrite:
        raise ValueError(f"{out_dir} already holds a run ({', '.join(found)}): continue it with --init_from=resume, "
                         f"or start over with --overwrite=True (replaces it) or another --out_dir")
    path = os.path.join(out_dir, METRICS)
    if resume_at is None or not os.path.exists(path):
        return held, []
    return held, [r for r in read_metrics(path) if r['iter'] <= resume_at and r['kind'] not in ('done', 'diverged')]


def start_metrics(out_dir, kept, fresh):
    """Write out_dir's metrics.jsonl anew with the records kept (a fresh run also removes the checkpoints of the
    run it replaces) -> the log open for appending, line-buffered so that plots can follow a live run."""
    path = os.path.join(out_dir, METRICS)
    with atomic_open(path, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in kept)
    for name in CHECKPOINTS if fresh else ():
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, name))
    return open(path, 'a', buffering=1)


def save(out_dir, names, write, held_iter=None):
    """write(f) the same checkpoint into out_dir/<name> for each name, atomically. A failure (a full disk) leaves
    the previous file whole and raises an OSError saying so, and which iteration last.pt holds (held_iter)."""
    for name in names:
        path = os.path.join(out_dir, name)
        try:
            with atomic_open(path, 'wb') as f:
                write(f)
        except (OSError, RuntimeError) as e:
            cause = e.__context__ if isinstance(e, RuntimeError) else e  # torch.save wraps a failed write
            if isinstance(cause, (SystemExit, KeyboardInterrupt)):
                raise cause from None  # a second Ctrl-C during the write
            if not isinstance(cause, OSError):
                raise
            cause.filename = cause.filename or path
            intact = f"the previous {name} is intact" if os.path.exists(path) else f"no {name} was written"
            held = f" from iteration {held_iter}" if held_iter is not None else ''
            resume = f', continue{held} with --init_from=resume' if os.path.exists(os.path.join(out_dir, 'last.pt')) else ''
            raise OSError(f"{describe(cause)}; {intact}{resume}") from None


def time_to_target(evals, target, key='time'):
    """When a run's val loss first reaches target, from its 'eval' records in order: the record's key ('time':
    seconds of training; 'tokens'; 'iter') linearly interpolated between the evaluation before the crossing and the
    one at or below target. None if it never does. train.py's 'target' record, sweep.py and compare.py all use it."""
    for before, r in zip([None] + evals, evals):
        if r['val_loss'] <= target:
            if before is None or before['val_loss'] == r['val_loss']:
                return r[key]
            f = (before['val_loss'] - target) / (before['val_loss'] - r['val_loss'])
            return before[key] + f * (r[key] - before[key])
    return None


def fmt(x, spec='.4f'):
    """A number for a table: '-' when there is none."""
    return '-' if x is None else format(x, spec)


def markdown_table(head, rows):
    """Lines of a Markdown table."""
    return ['| ' + ' | '.join(map(str, r)) + ' |' for r in [head, ['---'] * len(head), *rows]]
