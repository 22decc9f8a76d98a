"""LLaVA's two stages on SmolLM2-135M-Instruct: the visual assistant of notebook 07, trained and shipped.

Notebook 05's 3,000 training scenes (the last 200 held back for validation) -> the frozen CLIP tower's region
features (shipped, `vqa_train_features`) -> LLaVA-1.5's mlp2x_gelu connector -> spliced at `<image>` into
SmolLM2-135M-Instruct (utils.assistant):
- stage 1, as LLaVA's: the LM frozen, only the connector trains, on descriptions ("Describe the image." -> the
  scene's description, LLaVA's caption data);
- stage 2, as LLaVA's: the connector and LoRA adapters on the LM (peft) train on the instruction conversations
  (utils.instruct.item_conversations); the validation questions are answered every EVAL_EVERY steps and the
  step with the best validation accuracy is the one shipped (never chosen on the 400 held-out questions).
Then the 400 held-out questions (with and without the image) and 100 held-out descriptions are scored and
written with the recipe, the step times and the run's history into data/checkpoints/smol_assistant.json.
Each stage saves its state into .cache/smol_assistant/ every 25 steps; run the same command again to resume.

    python scripts/train_smol_assistant.py                 # both stages, ships the assistant
    python scripts/train_smol_assistant.py --text          # the text-reading ceiling: the same stage-2 recipe, the
                                                           # true description as text instead of the image
    python scripts/train_smol_assistant.py --measure       # one step of LoRA vs full fine-tuning: time, memory
    python scripts/train_smol_assistant.py --smoke         # 2 steps a stage on a few rows, writes nothing
    python scripts/train_smol_assistant.py --device cuda   # on a GPU (same seeds; numbers differ slightly)
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import CACHE_DIR, DATA_DIR, checkpoints, env, instruct, llava, smollm  # noqa: E402
from utils import assistant as A  # noqa: E402

STAGE1 = A.StageConfig(steps=200, batch_size=8, lr_connector=2e-3, warmup=20, seed=0)
STAGE2 = A.StageConfig(steps=1000, batch_size=8, lr_connector=1e-3, lr_lora=5e-4, warmup=20, seed=1, eval_every=100)
TEXT_STEPS = 500   # the text-reading ceiling: STAGE2's recipe on a 500-step schedule (its rows are longer: 4.5 s a
                   # step on 2 cores, where 1,000 steps would take about 75 min)
STATE_DIR = CACHE_DIR / "smol_assistant"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rounded(acc: dict) -> dict:
    """Accuracy, the 95% interval's ends, items: rounded for the JSON config."""
    return {k: [round(v[0], 4), round(v[1], 4), round(v[2], 4), v[3]] for k, v in acc.items()}


def run(args) -> None:
    env.set_threads(args.threads)
    env.seed_everything(0)
    device = torch.device(args.device)
    start = time.perf_counter()
    lm, tok = smollm.load_smollm2()
    tower = llava.load_clip_vision_tower()
    data = A.training_data(tok, tower)
    model = A.new_model(lm, tok, data["f_train"].shape[-1])
    del lm
    n = 16 if args.smoke else None
    s1, s2 = (A.StageConfig(**{**vars(c), "steps": 2, "batch_size": 4, "eval_every": 0, "save_every": 1})
              for c in (STAGE1, STAGE2)) if args.smoke else (STAGE1, STAGE2)
    state_dir = Path(args.state_dir) if args.state_dir else STATE_DIR / ("smoke" if args.smoke else "run")
    val_q = [it["question"] for it in data["val_items"]][: 8 if args.smoke else None]
    val_items = data["val_items"][: len(val_q)]
    log(f"loaded in {time.perf_counter() - start:.0f} s; stage 1 rows {tuple(data['stage1'][0].shape)}, stage 2 rows "
        f"{tuple(data['stage2'][0].shape)}, validation questions {len(val_q)}")
    model.to(device)
    f = lambda x: x.to(device)  # noqa: E731

    if args.text:
        return text_ceiling(model, tok, data, s2, state_dir, val_q, val_items, n, device)

    # ---- stage 1: descriptions, the connector alone
    if args.reuse_stage1 and not args.smoke:      # the shipped stage-1 connector, if STAGE1 made it
        state1, cfg1 = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / f"{A.CHECKPOINT}_stage1")
        if cfg1["stage1"] != vars(STAGE1) or A.stage1_recipe(cfg1["recipe"]) != A.stage1_recipe():
            raise ValueError(f"the shipped stage 1 was trained with {cfg1['stage1']}, not {vars(STAGE1)}: run without "
                             "--reuse-stage1")
        A.load_trainable(model, state1)
        results1 = cfg1["results"]
        log(f"stage 1: the shipped connector ({s1.steps} steps, {results1['step_seconds']} s a step)")
    else:
        results1 = stage_one(model, tok, data, s1, state_dir, val_q, n, f, device, ship=not args.smoke)
    if args.stage1_only:
        return
    model.to(device)

    # ---- stage 2: conversations, the connector and LoRA
    A.add_lora(model)
    model.to(device)
    rows2 = tuple(f(x[:n]) for x in (data["f_train"], *data["stage2"]))
    snap_dir = state_dir / "snapshots"

    def eval_fn(m, step):
        acc = A.accuracy_with_interval(A.generate(m, tok, f(data["f_val"][:len(val_q)]), val_q), val_items)
        log(f"  step {step}: validation {', '.join(f'{k} {v[0]:.1%}' for k, v in acc.items())}")
        snap_dir.mkdir(parents=True, exist_ok=True)
        torch.save(A.trainable_state(m), snap_dir / f"step{step}.pt")
        return rounded(acc)

    if args.stop_early:      # stage 2 ended before its schedule's last step: keep its saved history and snapshots
        h2 = torch.load(state_dir / "stage2.pt", weights_only=True)["history"]
        h2["step_seconds"] = h2["train_seconds"] / len(h2["loss"])
        log(f"stage 2 stopped early at step {len(h2['loss'])} of {s2.steps}; evaluated at {h2['eval_steps']}")
    else:
        h2 = A.train_stage(model, rows2, s2, state_dir / "stage2.pt", eval_fn=eval_fn, desc="stage 2 (connector + LoRA)")
    overall = [e["overall"][0] for e in h2["eval"]]
    best_step = h2["eval_steps"][max(range(len(overall)), key=lambda i: (overall[i], h2["eval_steps"][i]))]
    A.load_trainable(model, torch.load(snap_dir / f"step{best_step}.pt", weights_only=True))
    shipped = {k: v.half() for k, v in A.trainable_state(model).items()}
    A.load_trainable(model, shipped)                                   # what is measured is what ships
    log(f"stage 2: {s2.steps} steps, {h2['step_seconds']:.2f} s a step; validation picks step {best_step}")

    # ---- held-out evaluation
    final = held_out(model, tok, data, n, device, blind=True)
    log(f"held out: {summary(final)}")
    config = dict(lm=smollm.SMOLLM_HUB_ID, gguf_sha256=smollm.GGUF_SHA256, connector="mlp2x_gelu",
                  feature_dim=data["f_train"].shape[-1], lora=A.LORA, recipe=A.RECIPE,
                  stage1=vars(STAGE1), stage2=vars(STAGE2), device=args.device, threads=torch.get_num_threads(),
                  trainable=dict(connector=sum(p.numel() for k, p in model.named_parameters() if A.is_connector(k)),
                                 lora=sum(p.numel() for k, p in model.named_parameters() if A.is_lora(k)),
                                 lm=sum(p.numel() for k, p in model.named_parameters()
                                        if not A.is_lora(k) and not A.is_connector(k))),
                  results=dict(stage1=results1,
                               stage2=dict(steps=s2.steps, steps_run=len(h2["loss"]),
                                           step_seconds=round(h2["step_seconds"], 3),
                                           seconds=round(h2["train_seconds"], 1), loss=[round(x, 4) for x in h2["loss"]],
                                           eval_steps=h2["eval_steps"], val=h2["eval"], best_step=best_step),
                               **final),
                  wall_seconds=round(time.perf_counter() - start, 1))
    if args.smoke:
        log("smoke run: nothing written")
        return
    out = checkpoints.save_checkpoint(DATA_DIR / "checkpoints" / A.CHECKPOINT, shipped, config)
    log(f"wrote {out.relative_to(DATA_DIR.parent)} ({out.stat().st_size / 1e6:.1f} MB); "
        "now run scripts/update_manifest.py")


def stage_one(model, tok, data, s1, state_dir, val_q, n, f, device, ship: bool) -> dict:
    """Stage 1 trained (or resumed): the connector on descriptions; scored, and written to data/ with `ship`."""
    rows1 = tuple(f(x[:n]) for x in (data["f_train"], *data["stage1"]))
    h1 = A.train_stage(model, rows1, s1, state_dir / "stage1.pt", desc="stage 1 (connector)")
    d_val = A.generate(model, tok, f(data["f_val"][:len(val_q)][:50]), [instruct.DESCRIBE_PROMPT] * min(50, len(val_q)),
                       max_new_tokens=48)
    named1 = object_share(d_val, data["val_ds"])
    log(f"stage 1: {s1.steps} steps, {h1['step_seconds']:.2f} s a step, loss {mean_tail(h1['loss']):.3f}; "
        f"validation descriptions: objects named right {named1:.1%}; e.g. {d_val[0]!r}")
    stage1_state = {k: v.half() for k, v in A.trainable_state(model).items()}       # the connector alone
    A.load_trainable(model, stage1_state)
    stage1_held_out = held_out(model, tok, data, n, device)
    log(f"stage 1, held out: {summary(stage1_held_out)}")
    results1 = dict(steps=s1.steps, step_seconds=round(h1["step_seconds"], 3), seconds=round(h1["train_seconds"], 1),
                    loss=[round(x, 4) for x in h1["loss"]], val_objects_named=round(named1, 4),
                    val_description=d_val[0], held_out=stage1_held_out)
    if ship:
        out = checkpoints.save_checkpoint(DATA_DIR / "checkpoints" / f"{A.CHECKPOINT}_stage1", stage1_state,
                                          dict(lm=smollm.SMOLLM_HUB_ID, connector="mlp2x_gelu",
                                               feature_dim=data["f_train"].shape[-1], recipe=A.RECIPE,
                                               stage1=vars(STAGE1), results=results1))
        log(f"wrote {out.relative_to(DATA_DIR.parent)}")
    return results1


def text_ceiling(model, tok, data, s2, state_dir, val_q, val_items, n, device) -> None:
    """The same stage-2 recipe (LoRA, same steps, rows and learning rate) on text: the true description is
    written before the first question and no image is given. Writes smol_assistant_text.json (results only)."""
    A.add_lora(model)
    model.to(device)
    convs = A.text_conversations(data["conversations"], data["scenes"])[:n]
    ids, labels = instruct.conversation_rows(tok, convs, image=False)
    cfg = A.StageConfig(**{**vars(s2), **({"steps": TEXT_STEPS} if n is None else {})})
    described_val = [instruct.described_question(it) for it in val_items]

    def eval_fn(m, step):
        acc = A.accuracy_with_interval(A.generate(m, tok, None, described_val, image=False), val_items)
        log(f"  step {step}: validation {', '.join(f'{k} {v[0]:.1%}' for k, v in acc.items())}")
        return rounded(acc)

    h = A.train_stage(model, (None, ids.to(device), labels.to(device)), cfg, state_dir / "text.pt", eval_fn=eval_fn,
                      desc="text ceiling (LoRA)")
    model.cpu()
    items = data["items"][:n]
    answers = A.generate(model, tok, None, [instruct.described_question(it) for it in items], image=False)
    acc = A.accuracy_with_interval(answers, items)
    log(f"text ceiling, held out: {', '.join(f'{k} {v[0]:.1%}' for k, v in acc.items())}")
    if n is None:
        out = DATA_DIR / "checkpoints" / "smol_assistant_text.json"
        out.write_text(json.dumps(dict(recipe="stage 2 of smol_assistant on text rows (description + question)",
                                       conversations=A.RECIPE["conversations"],
                                       stage2=vars(cfg), lora=A.LORA, step_seconds=round(h["step_seconds"], 3), eval_steps=h["eval_steps"],
                                       val=h["eval"], accuracy=rounded(acc), answers=answers), indent=1) + "\n")
        log(f"wrote {out.relative_to(DATA_DIR.parent)}")


def held_out(model, tok, data, n, device, blind: bool = False) -> dict:
    """The 400 held-out questions answered with the image (and without it, `blind`), and 100 held-out scenes
    described: per-kind accuracy with 95% intervals, every answer, the descriptions' exact-object share."""
    model.cpu()
    items, questions = data["items"][:n], [it["question"] for it in data["items"]][:n]
    t0 = time.perf_counter()
    answers = A.generate(model, tok, data["f_test"][:len(questions)], questions)
    out = dict(accuracy=rounded(A.accuracy_with_interval(answers, items)), answers=answers,
               answer_seconds=round(time.perf_counter() - t0, 1))
    if blind:
        out["blind_answers"] = A.generate(model, tok, None, questions, image=False)
        out["blind"] = rounded(A.accuracy_with_interval(out["blind_answers"], items))
    n_desc = 8 if n else 100
    desc = A.generate(model, tok, data["f_test"][:n_desc], [instruct.DESCRIBE_PROMPT] * n_desc, max_new_tokens=48)
    truth = [instruct.describe(smollm.shapes.Scene.from_json(s)) for s in data["test_ds"]["scene"][:n_desc]]
    out["descriptions_exact"] = round(sum(instruct.is_correct(d, t, "describe") for d, t in zip(desc, truth)) / n_desc, 4)
    out["objects_named"] = round(object_share(desc, data["test_ds"]), 4)
    out["descriptions"] = desc
    model.to(device)
    return out


def summary(res: dict) -> str:
    acc = ", ".join(f"{k} {v[0]:.1%}" for k, v in res["accuracy"].items())
    blind = f"; blind {res['blind']['overall'][0]:.1%}" if "blind" in res else ""
    return (f"{acc}{blind}; descriptions exactly right {res['descriptions_exact']:.0%}, objects named right "
            f"{res['objects_named']:.0%}; answers in {res['answer_seconds']} s")


def object_share(descriptions, ds) -> float:
    scenes = [smollm.shapes.Scene.from_json(s) for s in ds["scene"][:len(descriptions)]]
    named = [len(instruct.description_objects(d) & instruct.description_objects(instruct.describe(s)))
             / len(s.objects) for d, s in zip(descriptions, scenes)]
    return sum(named) / len(named)


def mean_tail(xs, k: int = 25) -> float:
    return sum(xs[-k:]) / len(xs[-k:])


def measure(args) -> None:
    """One stage-2 step (8 conversation rows) with LoRA and with the whole LM trained, each in a fresh process:
    seconds a step (mean of 3 after one warm-up) and peak resident memory."""
    if args.measure_one:
        env.set_threads(2)
        lm, tok = smollm.load_smollm2()
        data = A.training_data(tok, llava.load_clip_vision_tower())
        model = A.add_lora(A.new_model(lm, tok, data["f_train"].shape[-1]))
        del lm
        rows = (data["f_train"][:32], data["stage2"][0][:32], data["stage2"][1][:32])
        if args.measure_one == "full":                  # the LM's own weights train instead of adapters
            for k, p in model.named_parameters():
                p.requires_grad_(not A.is_lora(k))
            params = [p for k, p in model.named_parameters() if not A.is_lora(k)]
            opt = torch.optim.AdamW(params, lr=1e-5)
        else:                                           # stage 2 as the script trains it: connector + LoRA
            params = A.set_trainable(model, lora=True)
            opt = torch.optim.AdamW(params, lr=5e-4)
        times = []
        for step in range(4):                           # the same loop for both: one warm-up, then 3 timed
            t0 = time.perf_counter()
            idx = A.batch_rows(step, 32, 8, 0)
            loss = model.loss(rows[0][idx], rows[1][idx], rows[2][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        trainable = sum(p.numel() for p in params)
        print(json.dumps(dict(mode=args.measure_one, step_seconds=round(sum(times[1:]) / 3, 2), trainable=trainable,
                              peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2))))
        return
    out = {}
    for mode in ("lora", "full"):
        res = subprocess.run([sys.executable, __file__, "--measure-one", mode], capture_output=True, text=True, check=True)
        out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
        log(f"{mode}: {out[mode]}")
    path = DATA_DIR / "checkpoints" / "smol_assistant_cost.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    log(f"wrote {path.relative_to(DATA_DIR.parent)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="2 steps a stage on 16 rows; writes nothing")
    parser.add_argument("--text", action="store_true", help="the text-reading ceiling instead of the assistant")
    parser.add_argument("--measure", action="store_true", help="one step of LoRA vs full fine-tuning")
    parser.add_argument("--measure-one", choices=["lora", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--reuse-stage1", action="store_true",
                        help="start stage 2 from the shipped stage-1 connector (checked to be STAGE1's) instead of "
                             "training stage 1 again")
    parser.add_argument("--stage1-only", action="store_true", help="stop after stage 1 (its checkpoint and scores)")
    parser.add_argument("--stop-early", action="store_true",
                        help="end stage 2 at its last saved step (the run was stopped) and finish: pick the best "
                             "validated snapshot, score it and ship it; the config records the steps run")
    parser.add_argument("--state-dir", default=None, help="where the resumable state goes (default .cache/smol_assistant)")
    a = parser.parse_args()
    measure(a) if (a.measure or a.measure_one) else run(a)
