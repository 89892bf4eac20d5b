"""
Settings for every script (train.py, sample.py, bench.py, ...), nanoGPT style.

A script defines its settings as plain module-level values and then calls

    from configurator import configure
    config = configure(globals())

which applies, left to right, each config file named on the command line
(`python train.py config/train_tinystories.py`, plain Python executed with the
current settings in scope, so `lr_decay_iters = max_iters` works) and each
`--key=value`. `config` is the dict of effective settings, for logging and
checkpoints. Unlike nanoGPT, mistakes are caught: an unknown key names the
nearest valid one, and a value of the wrong type is refused, both with a
one-line message instead of a silently ignored setting.

configure() also installs the one place where every script turns an exception the
user caused (a bad value, a missing or damaged file, a full disk, Ctrl-C) into one
line on stderr instead of a traceback; bugs keep their traceback, and --debug=True
(accepted by every script) shows it for everything.
"""
import ast
import difflib
import errno
import os
import sys
import traceback
import types

SETTING_TYPES = (bool, int, float, str, tuple, type(None))
DEBUG = False  # --debug=True: full tracebacks, for bug reports


def setting_keys(g):
    """The settings among a script's globals: lowercase names of plain values (UPPERCASE ones are constants)."""
    return [k for k, v in g.items() if not k.startswith('_') and k == k.lower() and isinstance(v, SETTING_TYPES)]


def unknown(key, keys, where):
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    hint = f"did you mean '{near[0]}'?" if near else "run with --help to list the settings"
    return ValueError(f"{where}: unknown setting '{key}'; {hint}")


def coerce(key, value, default, where):
    """Return value converted to the type of default, or raise ValueError saying why it can't be."""
    want = type(default)
    if isinstance(value, SETTING_TYPES) and (default is None or type(value) is want):
        return value
    if want is bool:
        names = {'true': True, 'false': False, '1': True, '0': False}
        if str(value).lower() in names and isinstance(value, (bool, int, str)):
            return names[str(value).lower()]
    elif want is float and type(value) is int:
        return float(value)
    elif want is int and type(value) is float and value.is_integer():
        return int(value)  # --max_iters=1e4
    elif want is tuple and type(value) is list:
        return tuple(value)
    elif want is str and type(value) in (int, float, bool):
        return str(value)  # --start=42 from a config file means the text "42"
    kind = 'a plain value' if default is None else f'{want.__name__} like {default!r}'
    raise ValueError(f"{where}: '{key}' must be {kind}, got {value!r}")


def parse(text, default):
    """Command-line text -> Python value. Strings stay strings; so do values that aren't literals."""
    if isinstance(default, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def run_file(path, ns):
    """Execute config file path in namespace ns; its mistakes become one-line ValueErrors naming the line."""
    try:
        with open(path, encoding='utf-8') as f:
            source = f.read()
        code = compile(source, path, 'exec')
    except OSError as e:
        hint = f"; did you mean --{path}?" if '=' in path and not path.startswith('-') else \
            "; pass an existing file or --key=value"
        raise ValueError(f"config file {path}: {e.strerror}{hint}") from None
    except (UnicodeDecodeError, ValueError):  # binary data, or text with NUL bytes
        raise ValueError(f"config file {path} is not a Python text file; pass a config like "
                         "config/train_tinystories_cpu.py, or --key=value") from None
    except SyntaxError as e:
        raise ValueError(f"config file {path} line {e.lineno}: {e.msg}; a config file is Python "
                         "(lines like learning_rate = 1e-3): fix that line") from None
    try:
        exec(code, ns)
    except Exception as e:
        line = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == path][-1:] or ['?']
        raise ValueError(f"config file {path} line {line[0]} raised {type(e).__name__}: "
                         f"{' '.join(str(e).split())}; fix that line") from None


def configure(g, argv=None, strict_files=True):
    """Apply config files and --key=value overrides from argv (default sys.argv[1:]) to the dict g.
    strict_files=False ignores keys in config files that g doesn't define (bench.py reads train configs)."""
    global DEBUG
    argv = sys.argv[1:] if argv is None else argv
    sys.excepthook = one_line_errors
    for arg in [a for a in argv if a == '--debug' or a.startswith('--debug=')]:
        DEBUG = coerce('debug', parse(arg.partition('=')[2] or 'True', False), False, 'command line')
        argv = [a for a in argv if a != arg]
    keys = setting_keys(g)
    for arg in argv:
        if arg in ('-h', '--help'):
            print('settings (override with a config file or --key=value):')
            for k in keys:
                print(f'  --{k}={g[k]!r}')
            print('  --debug=False  (any script: show full tracebacks, for bug reports)')
            raise SystemExit(0)
        if not arg.startswith('--'):
            ns = {k: g[k] for k in keys}
            run_file(arg, ns)
            print(f'overriding config with {arg}')
            for k, v in ns.items():
                if k.startswith('_') or (k not in keys and isinstance(v, (types.ModuleType, types.FunctionType, type))):
                    continue  # imports and helper functions a config file may define
                if k not in keys:
                    if strict_files:
                        raise unknown(k, keys, arg)
                    continue
                g[k] = coerce(k, v, g[k], arg)
        else:
            key, eq, text = arg[2:].partition('=')  # partition: a value may itself contain '='
            if key not in keys:
                raise unknown(key, keys, 'command line')
            if not eq:
                if not isinstance(g[key], bool):
                    raise ValueError(f"command line: --{key} needs a value, like --{key}={g[key]!r}")
                text = 'True'  # a bare --flag turns a boolean on
            g[key] = coerce(key, parse(text, g[key]), g[key], 'command line')
    return {k: g[k] for k in keys}


# -----------------------------------------------------------------------------
# one line per user-caused failure

OS_ERRORS = {  # errno -> (what happened, what to do)
    errno.ENOSPC: ('the disk is full', 'free some space or choose another directory, then run again'),
    errno.EDQUOT: ('the disk quota is used up', 'free some space or choose another directory, then run again'),
    errno.EROFS: ('the filesystem is read-only', 'choose a writable directory'),
    errno.EACCES: ('permission denied', 'choose a directory you can write to, or fix its permissions'),
    errno.EPERM: ('operation not permitted', 'choose a directory you can write to, or fix its permissions'),
    errno.ENOENT: ('no such file or directory', 'check the path'),
    errno.EEXIST: ('a file is in the way', 'remove it or choose another path'),
    errno.ENOTDIR: ('part of the path is a file, not a directory', 'choose another path'),
    errno.EISDIR: ('it is a directory, not a file', 'give the path of a file'),
}


def describe(e):
    """The one line a user sees for an exception they caused, or None for a bug (which keeps its traceback)."""
    if isinstance(e, KeyboardInterrupt):
        return 'interrupted'
    if type(e).__name__ == 'OutOfMemoryError':  # torch's, without importing torch here
        return (f"out of memory ({str(e).splitlines()[0][:120]}); lower --batch_size (raising "
                "gradient_accumulation_steps keeps the batch), --block_size or the model size")
    if isinstance(e, OSError) and e.errno in OS_ERRORS:
        what, fix = OS_ERRORS[e.errno]
        where = f' ({e.filename})' if e.filename else ''
        return f"{what}{where}: {fix}"
    if isinstance(e, OSError) and e.errno is not None and e.filename is None and e.strerror:
        return e.strerror  # a message of our own, e.g. rundir.lock's
    if isinstance(e, (ValueError, OSError)):
        return ' '.join(str(e).split())
    return None


def one_line_errors(kind, e, tb):
    """sys.excepthook of every script (configure() installs it)."""
    if isinstance(e, BrokenPipeError) and not DEBUG:  # the reader of our stdout left (| head): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.stderr.flush()
        os._exit(0)
    line = None if DEBUG else describe(e)
    if line is None:
        sys.__excepthook__(kind, e, tb)
    elif os.environ.get('RANK', '0') == '0':  # under torchrun every process fails alike: say it once
        print(line, file=sys.stderr)
