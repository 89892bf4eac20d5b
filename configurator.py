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
"""
import ast
import difflib
import sys
import types

SETTING_TYPES = (bool, int, float, str, tuple, type(None))


def setting_keys(g):
    return [k for k, v in g.items() if not k.startswith('_') and isinstance(v, SETTING_TYPES)]


def unknown(key, keys, where):
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    hint = f"did you mean '{near[0]}'?" if near else "run with --help to list the settings"
    return SystemExit(f"{where}: unknown setting '{key}'; {hint}")


def coerce(key, value, default, where):
    """Return value converted to the type of default, or exit saying why it can't be."""
    want = type(default)
    if default is None or type(value) is want:
        return value
    if want is bool:
        names = {'true': True, 'false': False, '1': True, '0': False}
        if str(value).lower() in names and not isinstance(value, float):
            return names[str(value).lower()]
    elif want is float and type(value) is int:
        return float(value)
    elif want is int and type(value) is float and value.is_integer():
        return int(value)  # --max_iters=1e4
    elif want is tuple and type(value) is list:
        return tuple(value)
    elif want is str and type(value) in (int, float, bool):
        return str(value)  # --start=42 from a config file means the text "42"
    raise SystemExit(f"{where}: '{key}' must be {want.__name__} like {default!r}, got {value!r}")


def parse(text, default):
    """Command-line text -> Python value. Strings stay strings; so do values that aren't literals."""
    if isinstance(default, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def configure(g, argv=None, strict_files=True):
    """Apply config files and --key=value overrides from argv (default sys.argv[1:]) to the dict g.
    strict_files=False ignores keys in config files that g doesn't define (bench.py reads train configs)."""
    argv = sys.argv[1:] if argv is None else argv
    keys = setting_keys(g)
    for arg in argv:
        if arg in ('-h', '--help'):
            print('settings (override with a config file or --key=value):')
            for k in keys:
                print(f'  --{k}={g[k]!r}')
            raise SystemExit(0)
        if not arg.startswith('--'):
            try:
                with open(arg) as f:
                    source = f.read()
            except OSError as e:
                raise SystemExit(f"config file {arg}: {e.strerror}; pass an existing file or --key=value")
            print(f'overriding config with {arg}')
            ns = {k: g[k] for k in keys}
            exec(compile(source, arg, 'exec'), ns)
            for k, v in ns.items():
                if k.startswith('_') or isinstance(v, (types.ModuleType, types.FunctionType, type)):
                    continue
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
                    raise SystemExit(f"command line: --{key} needs a value, like --{key}={g[key]!r}")
                text = 'True'  # a bare --flag turns a boolean on
            g[key] = coerce(key, parse(text, g[key]), g[key], 'command line')
    return {k: g[k] for k in keys}
