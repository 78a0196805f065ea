"""Run Hugging Face transformers' Universal Assisted Generation (UAG) in its own environment; used by test_vs_hf_uag.py.

Runs under the HF venv's Python (``SPECFW_HF_PYTHON``, built by
``scripts/setup_hf_uag.sh``), not specfw's: it imports only torch and
transformers. It is a worker, so the benchmark keeps both sides' models
loaded. The first line on stdin sets it up::

    {"target": FOLDER, "draft": FOLDER, "k": 2}

(the specfw model folders: config.json, model.safetensors and the tokenizer
files, which transformers loads as they are). It loads both models in float32
on the CPU and answers ``{"ready": true, "torch": ..., "transformers": ...}``.
Each later line, ``{"prompt": [target ids], "max_tokens": 48}``, is answered
with one line:

* ``token_ids``: assisted generation's new ids (greedy, ``assistant_model`` and
  ``assistant_tokenizer`` given, so transformers picks
  ``AssistedCandidateGeneratorDifferentTokenizers``, its string-level UAG;
  ``num_assistant_tokens`` k, schedule ``constant``);
* ``alone_ids``: the target alone (plain greedy ``generate``), for the lossless check;
* ``passes``: target forward passes of the assisted loop (the first one
  holds the prompt, as specfw's prompt pass does);
* ``accepted``: emitted ids that were proposed by the assistant;
* ``proposed``: candidate target ids sent to verification, summed over passes;
* ``seconds``: wall time of the assisted call.

Both counts are read off the candidate generator without changing it: its
``get_candidates`` (what was proposed) and ``update_candidate_strategy``
(called once per pass with the ids the pass accepted) are wrapped.
"""

from __future__ import annotations

import json
import sys
import time


def _load(setup: dict):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(int(setup.get("threads", 1)))
    models, tokenizers = [], []
    for key in ("target", "draft"):
        folder = setup[key]
        models.append(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval())
        tokenizers.append(AutoTokenizer.from_pretrained(folder))
    return models, tokenizers


def _counting_generator(stats: dict):
    """Wrap transformers' string-level UAG candidate generator so each pass is counted."""
    from transformers.generation import candidate_generator as cg

    cls = cg.AssistedCandidateGeneratorDifferentTokenizers
    if getattr(cls, "_specfw_counting", False):
        return
    get_candidates, update = cls.get_candidates, cls.update_candidate_strategy

    def counted_get_candidates(self, input_ids, *args, **kwargs):
        candidates, logits = get_candidates(self, input_ids, *args, **kwargs)
        stats["pending"] = (input_ids.shape[1], candidates[0, input_ids.shape[1]:].tolist())
        return candidates, logits

    def counted_update(self, input_ids, scores, num_matches):
        start, proposal = stats.pop("pending", (input_ids.shape[1], []))
        new = input_ids[0, start:].tolist()
        agree = 0
        while agree < min(len(new), len(proposal)) and new[agree] == proposal[agree]:
            agree += 1
        stats["passes"] += 1
        stats["proposed"] += len(proposal)
        stats["accepted"] += agree
        return update(self, input_ids, scores, num_matches)

    cls.get_candidates, cls.update_candidate_strategy = counted_get_candidates, counted_update
    cls._specfw_counting = True


def main() -> None:
    import torch
    import transformers

    setup = json.loads(sys.stdin.readline())
    (target, draft), (target_tok, draft_tok) = _load(setup)
    draft.generation_config.num_assistant_tokens = int(setup["k"])
    draft.generation_config.num_assistant_tokens_schedule = "constant"
    stats = {"passes": 0, "proposed": 0, "accepted": 0}
    _counting_generator(stats)
    print(json.dumps({"ready": True, "torch": torch.__version__, "transformers": transformers.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        ids = torch.tensor([request["prompt"]], dtype=torch.long)
        common = {"max_new_tokens": int(request["max_tokens"]), "do_sample": False, "pad_token_id": target_tok.pad_token_id
                  if target_tok.pad_token_id is not None else target_tok.eos_token_id}
        with torch.no_grad():
            alone = target.generate(ids, attention_mask=torch.ones_like(ids), **common)[0, ids.shape[1]:].tolist()
            stats.update(passes=0, proposed=0, accepted=0)
            start = time.perf_counter()
            out = target.generate(ids, attention_mask=torch.ones_like(ids), assistant_model=draft,
                                  tokenizer=target_tok, assistant_tokenizer=draft_tok, **common)
            seconds = time.perf_counter() - start
        print(json.dumps({"token_ids": out[0, ids.shape[1]:].tolist(), "alone_ids": alone, "passes": stats["passes"],
                          "proposed": stats["proposed"], "accepted": stats["accepted"], "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
