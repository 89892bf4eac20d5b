"""
Serve stories over HTTP: an OpenAI-compatible completions API, and a page to write with in a browser.

    python serve.py --out_dir=out-tinystories-cpu          # http://127.0.0.1:8000 (--host=0.0.0.0 to listen wider)

    curl -N http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
         -d '{"prompt": "Once upon a time", "max_tokens": 100, "temperature": 0.8, "top_k": 50, "stream": true}'

Endpoints: POST /v1/completions (prompt, max_tokens, temperature, top_p, top_k, seed, n, stop, stream, usage: what
OpenAI's clients send; plus ignore_eos), GET /v1/models, GET /health, and GET / (serve.html, the page).

Every request's sequences (n per prompt) are decoded together with everyone else's: one decode.Batch over the
static KV cache, which sequences join and leave between steps (continuous batching), each with its own sampling
settings, seeded generator and stop. One thread decodes; the HTTP side (FastAPI on uvicorn) only queues requests
and turns tokens into text. At most max_batch + max_queue sequences are in the server; a request that would not
fit is answered 429 with Retry-After. Ctrl-C stops accepting requests, finishes the ones in flight, and exits.

As in sample.py, a prompt is placed after <|endoftext|> (every training story starts after one), and choice i of
a request draws from its own generator seeded seed + i: alone, a choice is exactly sample.py's story with the same
seed and settings (in a batch, matrix products may round differently, so a story can part from it after a while).
"""
import asyncio
import codecs
import collections
import json
import os
import random
import socket
import threading
import time

import torch

import decode
import rundir
import tokenizer
from configurator import configure
from device import DEVICE, DTYPE, check_device, torch_dtype
from model import GPT

# -----------------------------------------------------------------------------
out_dir = 'out'
ckpt = 'best'           # 'best' | 'last' | a path, as in sample.py
host = '127.0.0.1'      # the loopback only; '0.0.0.0' listens on every interface
port = 8000             # 0 = any free port (the one chosen is printed)
max_batch = 32          # sequences decoded together: the rows of the KV cache, and the most one request may ask for
max_queue = 64          # sequences that may wait for a row; beyond, requests get 429
max_tokens = 1024       # the most tokens a request may ask for per sequence (the window slides past block_size)
device = DEVICE
dtype = DTYPE           # of the weights and activations
compile = True          # torch.compile the decoding step at start, once per size: ~1.6x on a CPU; CUDA graphs on a GPU
sizes = (1, 4, 16, 32)  # with compile: the batch sizes a step runs at (idle rows fill n sequences up to the next)
threads = 0             # torch CPU threads; 0 = 1 while one sequence decodes, every core for more
measure = ''            # the URL of a running serve.py: measure it instead of serving (see load) with these
clients = (1, 8, 32)    # numbers of concurrent streaming clients, each asking for measure_tokens tokens again
measure_tokens = 128    # and again
measure_seconds = 20.0  # for this long
# -----------------------------------------------------------------------------
if __name__ == '__main__':
    config = configure(globals())
FIELDS = ('prompt', 'model', 'max_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'n', 'stop', 'stream',
          'stream_options', 'ignore_eos', 'user', 'echo', 'logprobs', 'best_of', 'suffix', 'presence_penalty',
          'frequency_penalty', 'logit_bias')
MAX_BODY = 1 << 20  # bytes: prompts are at most block_size tokens, so far less is ever needed


def parse_request(body, max_tokens_limit, max_sequences):
    """The JSON body of POST /v1/completions -> its settings as a dict, or a ValueError whose one-line message is
    the 400 answer. Fields OpenAI defines but this server does not implement are accepted at their neutral value."""
    try:
        text = body.decode('utf-8')
    except UnicodeDecodeError as e:
        raise ValueError(f'the request body is not UTF-8 (byte {e.start}); send JSON encoded as UTF-8') from None
    try:
        p = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f'the request body is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})') from None
    if not isinstance(p, dict):
        raise ValueError('the request body must be a JSON object like {"prompt": "Once upon a time"}')
    for key in p:
        if key not in FIELDS:
            raise ValueError(f"unknown field '{key}'; this server reads {', '.join(FIELDS[:10])}")
    p = {k: v for k, v in p.items() if v is not None}  # null means "not given", as OpenAI's API treats it

    def number(name, default, lo, hi, integer=False, hint=''):
        v = p.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
            raise ValueError(f"'{name}' must be {'an integer' if integer else 'a number'}, got {json.dumps(v)}")
        if not lo <= v <= hi:
            raise ValueError(f"'{name}' is {v}; it must be between {lo} and {hi}{hint}")
        return v

    prompt = p.get('prompt', '')
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(x, str) for x in prompts):
        raise ValueError("'prompt' must be a string or a list of strings (token ids are not accepted)")
    stop = p.get('stop', [])
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise ValueError("'stop' must be a non-empty string or a list of at most 4 of them")
    for name, kind in (('stream', bool), ('ignore_eos', bool), ('echo', bool), ('model', str), ('user', str),
                       ('stream_options', dict)):
        if name in p and not isinstance(p[name], kind):
            raise ValueError(f"'{name}' must be {'true or false' if kind is bool else 'a ' + kind.__name__}, got "
                             f"{json.dumps(p[name])}")
    n = number('n', 1, 1, max_sequences, integer=True)
    for name, neutral in (('echo', False), ('logprobs', 0), ('suffix', ''), ('presence_penalty', 0),
                          ('frequency_penalty', 0), ('logit_bias', {}), ('best_of', n)):
        if p.get(name, neutral) != neutral:
            raise ValueError(f"'{name}' is not supported by this server; leave it out")
    settings = dict(
        prompts=prompts, n=n, stops=stops, stream=p.get('stream', False), ignore_eos=p.get('ignore_eos', False),
        include_usage=p.get('stream_options', {}).get('include_usage', False) is True,
        max_tokens=number('max_tokens', 16, 0, max_tokens_limit, integer=True, hint=" (this server's limit)"),
        temperature=number('temperature', 1.0, 0, 2, hint=' (0 is greedy)'),
        top_p=number('top_p', 1.0, 0, 1), top_k=number('top_k', 0, 0, 1 << 31, integer=True, hint=' (0 is off)'),
        seed=number('seed', random.getrandbits(63), 0, 2**64 - 1 - len(prompts) * n, integer=True))
    if settings['top_p'] == 0:
        raise ValueError("'top_p' is 0, which keeps no token; use a value in (0, 1], 1 is off")
    if len(prompts) * n > max_sequences:
        raise ValueError(f'{len(prompts)} prompts x n={n} is {len(prompts) * n} sequences; this server decodes at '
                         f'most {max_sequences} for one request')
    return settings


class Choice:
    """One sequence a request asked for: its prompt's ids, how to sample it, and where its tokens go. The decoding
    thread puts its tokens, then a finish reason ('stop' or 'length'), on the request's asyncio queue; the request
    sets `cancelled` (client gone, stop string seen) and the thread drops the sequence at its next step."""

    def __init__(self, index, ids, sampling, generator, max_tokens, eos_id, events, loop):
        self.index, self.ids, self.sampling, self.generator = index, ids, sampling, generator
        self.max_tokens, self.eos_id, self.events, self.loop = max_tokens, eos_id, events, loop
        self.made, self.cancelled = 0, False  # tokens decoded (<|endoftext|> included)

    def put(self, item):  # from the decoding thread
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (self.index, item))
        except RuntimeError:  # the event loop has closed: nobody is listening any more
            self.cancelled = True


class Engine:
    """The decoding thread: it drops the sequences whose requests went away, moves waiting choices into free rows
    of the Batch, steps the batch, hands each token to its choice and removes the sequences that finished."""

    def __init__(self, batch, max_queue, threads=0):
        self.batch, self.max_queue, self.threads = batch, max_queue, threads
        self.waiting, self.running = collections.deque(), {}  # choices with no row yet; Sequence -> its Choice
        self.lock, self.wake, self.stopping = threading.Lock(), threading.Event(), False
        self.thread = threading.Thread(target=self.run, name='decode', daemon=True)

    def submit(self, choices):
        """Queue a request's choices; False if the server is full (waiting + decoding would exceed its bound)."""
        with self.lock:
            if len(self.waiting) + len(self.running) + len(choices) > self.batch.max_rows + self.max_queue:
                return False
            self.waiting.extend(choices)
        self.wake.set()
        return True

    def load(self):
        with self.lock:
            return dict(decoding=len(self.running), waiting=len(self.waiting))

    def run(self):
        while True:
            for seq in [seq for seq, choice in self.running.items() if choice.cancelled]:
                self.finish(seq)
            with self.lock:  # admit: fill free rows in arrival order
                while self.waiting and len(self.running) < self.batch.max_rows:
                    choice = self.waiting.popleft()
                    if not choice.cancelled:
                        self.running[self.batch.add(choice.ids, *choice.sampling, generator=choice.generator)] = choice
            if not self.running:
                if self.stopping:
                    return
                self.wake.wait()
                self.wake.clear()
                continue
            rows = len(self.running)
            if torch.get_num_threads() != decode.threads_for(rows, self.threads):
                torch.set_num_threads(decode.threads_for(rows, self.threads))
            for seq, token in zip(list(self.batch.seqs), self.batch.step()):
                choice = self.running[seq]
                choice.made += 1
                if token == choice.eos_id:
                    choice.put('stop')
                else:
                    choice.put(token)
                    if choice.made < choice.max_tokens:
                        continue
                    choice.put('length')
                self.finish(seq)

    def finish(self, seq):
        self.batch.remove(seq)
        with self.lock:
            del self.running[seq]

    def stop(self):
        """Return once every sequence in the server has finished."""
        self.stopping = True
        self.wake.set()
        self.thread.join()


class Text:
    """A choice's text as its tokens arrive: bytes decoded incrementally (a token may end inside a character), cut
    before the first stop string; text that may still turn out to begin a stop string is held back until it
    doesn't."""

    def __init__(self, enc, stops):
        self.enc, self.stops, self.text, self.sent, self.stopped = enc, stops, '', 0, False
        self.utf8 = codecs.getincrementaldecoder('utf-8')(errors='replace')

    def add(self, token=None):
        """Append a token (None: the end) -> the text that may now be sent."""
        if token is None:
            self.text += self.utf8.decode(b'', final=True)
        else:
            self.text += self.utf8.decode(self.enc.decode_single_token_bytes(token))
        hits = [i for i in (self.text.find(s, self.sent) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            end = min(hits)
        else:  # hold back the longest end of the text that begins some stop string
            held = max([k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])] or [0])
            end = len(self.text) - (0 if token is None else held)
        new, self.sent = self.text[self.sent:end], max(self.sent, end)
        return new


# -----------------------------------------------------------------------------
# HTTP: FastAPI routes around the engine


def make_app(model, enc, engine, name, page, max_tokens_limit):
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    block, device_ = model.config.block_size, model.lm_head.weight.device
    created = int(time.time())
    app = FastAPI(title='tinystories-gpt', docs_url=None, redoc_url=None)

    def error(status, message, kind='invalid_request_error', headers=None):
        return JSONResponse({'error': {'message': message, 'type': kind, 'param': None, 'code': None}},
                            status_code=status, headers=headers)

    @app.get('/')
    async def index():
        return HTMLResponse(page)

    @app.get('/health')
    async def health():
        return {'status': 'ok', 'model': name, 'block_size': block, 'max_tokens': max_tokens_limit,
                'max_batch': engine.batch.max_rows, 'max_queue': engine.max_queue, **engine.load()}

    @app.get('/v1/models')
    async def models():
        return {'object': 'list', 'data': [{'id': name, 'object': 'model', 'created': created, 'owned_by': 'you'}]}

    @app.post('/v1/completions')
    async def completions(request: Request):
        body = await request.body()
        if len(body) > MAX_BODY:
            return error(413, f'the request body is {len(body)} bytes; at most {MAX_BODY} are read')
        try:
            s = parse_request(body, max_tokens_limit, engine.batch.max_rows)
            prompt_ids = []
            for text in s['prompts']:
                ids = [enc.eot_token] + enc.encode(text, allowed_special={'<|endoftext|>'})
                if len(ids) > block:
                    raise ValueError(f'the prompt is {len(ids)} tokens with the <|endoftext|> put before it; this '
                                     f'model reads at most {block}: shorten it')
                prompt_ids.append(ids)
        except ValueError as e:
            return error(400, str(e))
        t0, loop, events = time.perf_counter(), asyncio.get_running_loop(), asyncio.Queue()
        sampling = (s['temperature'], s['top_k'] or None, None if s['top_p'] == 1 else s['top_p'])
        choices = [Choice(i, prompt_ids[i // s['n']], sampling,
                          torch.Generator(device=device_).manual_seed(s['seed'] + i), s['max_tokens'],
                          None if s['ignore_eos'] else enc.eot_token, events, loop)
                   for i in range(len(prompt_ids) * s['n'])]
        if s['max_tokens'] == 0:
            choices = []  # nothing to decode: every choice is empty
        elif not engine.submit(choices):
            return error(429, f'the server is full ({engine.batch.max_rows} sequences decoding, {engine.max_queue} '
                         'waiting); retry in a moment', 'rate_limit_error', {'Retry-After': '1'})
        rid = f'cmpl-{random.getrandbits(64):016x}'

        async def watch():  # a client that leaves frees its rows at the next step
            while (await request.receive())['type'] != 'http.disconnect':
                pass
            for c in choices:
                c.cancelled = True

        async def results():
            """(choice index, new text, finish reason or None) as the tokens arrive."""
            texts = [Text(enc, s['stops']) for _ in range(len(prompt_ids) * s['n'])]
            live = set(c.index for c in choices)
            for i in set(range(len(texts))) - live:  # max_tokens 0
                yield i, '', 'length'
            watcher = asyncio.create_task(watch())
            try:
                while live:
                    i, item = await events.get()
                    if i not in live:
                        continue
                    text = texts[i]
                    if isinstance(item, str):  # the engine finished this choice: 'stop' or 'length'
                        live.discard(i)
                        yield i, text.add(None), 'stop' if text.stopped else item
                        continue
                    counts[i] += 1
                    new = text.add(item)
                    if text.stopped:  # a stop string: this choice is done, its row goes at the next step
                        choices[i].cancelled = True
                        live.discard(i)
                    yield i, new, 'stop' if text.stopped else None
            finally:
                watcher.cancel()
                for c in choices:  # a stream closed early, or an error: free the rows
                    c.cancelled = True
                print(f"{len(texts)} x {s['max_tokens']} tokens requested, {sum(counts)} made, "
                      f"{time.perf_counter() - t0:.2f}s", flush=True)

        counts = [0] * (len(prompt_ids) * s['n'])  # tokens each choice's text was made of (not <|endoftext|>)

        def usage():
            prompt = sum(len(ids) for ids in prompt_ids)
            return {'prompt_tokens': prompt, 'completion_tokens': sum(counts), 'total_tokens': prompt + sum(counts)}

        def chunk(choice_list, **extra):
            return {'id': rid, 'object': 'text_completion', 'created': int(time.time()), 'model': name,
                    'choices': choice_list, **extra}

        if s['stream']:
            async def sse():
                async for i, new, finish in results():  # one event per token ('' while text is held back)
                    yield 'data: ' + json.dumps(chunk([{'text': new, 'index': i, 'logprobs': None,
                                                         'finish_reason': finish}])) + '\n\n'
                if s['include_usage']:
                    yield 'data: ' + json.dumps(chunk([], usage=usage())) + '\n\n'
                yield 'data: [DONE]\n\n'
            return StreamingResponse(sse(), media_type='text/event-stream', headers={'Cache-Control': 'no-cache'})
        out = [{'text': '', 'index': i, 'logprobs': None, 'finish_reason': None}
               for i in range(len(prompt_ids) * s['n'])]
        async for i, new, finish in results():
            out[i]['text'] += new
            out[i]['finish_reason'] = finish or out[i]['finish_reason']
        return chunk(out, usage=usage())

    return app


def load(url, n_clients, seconds, max_tokens):
    """n_clients clients, each streaming one completion after another from the serve.py at url for `seconds`
    (max_tokens tokens each, ignore_eos) -> tokens/s over all of them, each request's time to its first token and
    to its end (p50, p99), and the requests that failed."""
    import asyncio
    import httpx

    async def run():
        first, whole, tokens, errors, end = [], [], 0, 0, time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=n_clients)) as http:
            async def client(k):
                nonlocal tokens, errors
                while time.monotonic() < end:
                    t0, t_first, got = time.perf_counter(), None, 0
                    try:
                        async with http.stream('POST', url.rstrip('/') + '/v1/completions', json=dict(
                                prompt='Once upon a time', max_tokens=max_tokens, temperature=0.8, top_k=50,
                                seed=k * 1000003 + len(whole), stream=True, ignore_eos=True)) as r:
                            async for line in r.aiter_lines():
                                if line.startswith('data: {'):
                                    got, t_first = got + 1, t_first or time.perf_counter() - t0
                        if r.status_code != 200 or got != max_tokens + 1:  # every token, then the finish
                            raise httpx.HTTPError(f'{r.status_code}, {got} events')
                    except httpx.HTTPError:
                        errors += 1
                        continue
                    first.append(t_first)
                    whole.append(time.perf_counter() - t0)
                    tokens += max_tokens
            t0 = time.perf_counter()
            await asyncio.gather(*(client(k) for k in range(n_clients)))
            return first, whole, tokens / (time.perf_counter() - t0), errors

    first, whole, tok_s, errors = asyncio.run(run())
    pct = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] if xs else None
    return dict(clients=n_clients, requests=len(whole), errors=errors, tokens_per_s=tok_s, max_tokens=max_tokens,
                latency_p50_s=pct(whole, 0.5), latency_p99_s=pct(whole, 0.99), first_token_p50_s=pct(first, 0.5),
                first_token_p99_s=pct(first, 0.99))


def measure_server():
    """--measure=URL: aggregate tokens/s and each request's latency for each number of concurrent clients."""
    n = measure_tokens
    print(f"measuring {measure}: {n} tokens per request, streamed, {measure_seconds:g}s per row")
    served = []
    for n_clients in clients:
        served.append(f := load(measure, n_clients, measure_seconds, n))
        print(f"  {n_clients:3d} clients  {f['tokens_per_s']:8,.0f} tokens/s  latency p50 {f['latency_p50_s'] or 0:.2f}s "
              f"p99 {f['latency_p99_s'] or 0:.2f}s  first token p50 {f['first_token_p50_s'] or 0:.3f}s p99 "
              f"{f['first_token_p99_s'] or 0:.3f}s  {f['requests']} requests, {f['errors']} errors")
    rundir.write_json('serve_bench.json', {'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'url': measure,
                                           'serve': served})
    print("wrote serve_bench.json")


def main():
    check_device(device)
    for name, ok in (('max_batch', max_batch >= 1), ('max_queue', max_queue >= 0), ('max_tokens', max_tokens >= 1),
                     ('sizes', all(isinstance(b, int) and b >= 1 for b in sizes)), ('port', 0 <= port < 65536)):
        if not ok:
            raise ValueError(f"{name}={config[name]!r} is out of range; see python serve.py --help")
    import uvicorn  # the web stack is needed only here, so the rest of the repo runs without it
    page_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'serve.html')
    with open(page_path, encoding='utf-8') as f:
        page = f.read()
    ckpt_path = rundir.find_checkpoint(out_dir, ckpt)
    model, checkpoint = GPT.from_checkpoint(ckpt_path, device=device)
    enc = tokenizer.from_checkpoint(checkpoint, ckpt_path)
    # cast once (autocast would re-cast every matrix for every token), and lay the matrices out for decoding
    decode.transpose_weights(model.to(torch_dtype(dtype)))
    step = decode.compile_step(model) if compile else decode.decode_step
    batch = decode.Batch(model, max_batch, step, sizes if compile else None)
    engine = Engine(batch, max_queue, threads)
    if compile:  # compile the step for every size now, so no request waits for it
        for size in batch.sizes:
            t0 = time.perf_counter()
            torch.set_num_threads(decode.threads_for(size, threads))  # as the engine will run that size
            seqs = [batch.add([enc.eot_token]) for _ in range(size)]
            batch.step()
            for seq in seqs:
                batch.remove(seq)
            print(f"compiled the decoding step for {size} rows: {time.perf_counter() - t0:.1f}s", flush=True)
    name = os.path.basename(os.path.normpath(out_dir))
    app = make_app(model, enc, engine, name, page, max_tokens)
    sock = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))  # bound here, so port=0 can print the port it got
    bound = sock.getsockname()[1]
    engine.thread.start()
    print(f"{ckpt_path}: {model.num_params() / 1e6:.2f}M params, block {model.config.block_size}, {dtype}, "
          f"{'compiled' if compile else 'eager'} step, up to {max_batch} sequences at once, {max_queue} waiting",
          flush=True)
    print(f"serving {name} on http://{host if ':' not in host else f'[{host}]'}:{bound} (Ctrl-C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level='warning', access_log=False))
    try:
        server.run(sockets=[sock])  # on Ctrl-C uvicorn stops listening and lets the requests in flight finish
    except KeyboardInterrupt:  # ... then raises the Ctrl-C again: the server has stopped as asked
        pass
    finally:
        engine.stop()
    print('stopped', flush=True)


if __name__ == '__main__':
    measure_server() if measure else main()
