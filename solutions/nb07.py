"""Notebook 07 (LLaVA's instruction tuning): reference answers. Open after you tried."""
import torch

from utils import instruct, llava

from . import Exercise, register


def _loss_positions_by_masking():
    # measured on a real row: three answers of 1, 3 and 11 tokens, each closed by <|im_end|> (id 9)
    header, end = [1, 2, 3], 9
    ids = []
    for n in (1, 3, 11):
        ids += [5, 6, 7] + header + [20] * n + [end] + [8]
    return int((instruct.assistant_labels(torch.tensor(ids), header, end) != -100).sum())


register(Exercise(
    key="07.loss_positions", kind="value",
    expected=_loss_positions_by_masking,
    solution=lambda: (1 + 1) + (3 + 1) + (11 + 1),
    wrong=[15, 21, 12, 3],
    notes="each answer's tokens and the <|im_end|> that closes it carry loss: 15 + 3 = 18.",
))


def _assistant_labels_solution(input_ids, header_ids, end_id):
    ids, h = input_ids.tolist(), list(header_ids)
    out = [-100] * len(ids)
    inside = False
    for i in range(len(ids)):
        if inside:
            out[i] = ids[i]
            inside = ids[i] != end_id
        elif i >= len(h) and ids[i - len(h):i] == h:
            out[i] = ids[i]
            inside = ids[i] != end_id
    return torch.tensor(out, dtype=input_ids.dtype)


def _assistant_labels_cases():
    g = torch.Generator().manual_seed(7)
    header, end = [1, 2, 3], 9
    cases = []
    for turns in ([2], [1, 4], [3, 1, 6], [5]):
        ids = []
        for n in turns:
            ids += torch.randint(10, 40, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g).tolist()
            ids += header + torch.randint(10, 40, (n,), generator=g).tolist() + [end, 8]
        ids += [0] * 3                                   # padding after the conversation
        cases.append((torch.tensor(ids), header, end))
    cases.append((torch.tensor([5, 1, 2, 6, 9, 1, 3, 9]), header, end))   # header fragments are not headers
    return cases


def _masks_header_too(input_ids, header_ids, end_id):
    out = instruct.assistant_labels(input_ids, header_ids, end_id)
    ids, h = input_ids.tolist(), list(header_ids)
    for i in range(len(ids) - len(h) + 1):
        if ids[i:i + len(h)] == h:
            out[i:i + len(h)] = input_ids[i:i + len(h)]
    return out


def _drops_end(input_ids, header_ids, end_id):
    out = instruct.assistant_labels(input_ids, header_ids, end_id)
    out[input_ids == end_id] = -100
    return out


register(Exercise(
    key="07.assistant_labels", kind="function",
    expected=instruct.assistant_labels,
    solution=_assistant_labels_solution,
    cases=_assistant_labels_cases,
    wrong=[_masks_header_too, _drops_end, lambda input_ids, header_ids, end_id: input_ids.clone()],
    notes="only the answers and their closing <|im_end|> keep their ids; without <|im_end|> the model never learns to stop.",
))


def _xattn_params_by_counting():
    twice = llava.GatedCrossAttentionBlock(256, 4, 768)
    with torch.device("meta"):                       # the 8B-width block, counted without allocating it
        big = llava.GatedCrossAttentionBlock(4096, 32, 14336)
    return tuple(sum(p.numel() for p in b.parameters()) for b in (twice, big))


def _block(D, F):
    return 2 * D + 4 * D * D + 2 * D * F + 2


register(Exercise(
    key="07.xattn_block_params", kind="value",
    expected=_xattn_params_by_counting,
    solution=lambda: (_block(256, 768), _block(4096, 14336)),
    wrong=[(4 * 256 * 256 + 2 * 256 * 768, 4 * 4096 ** 2 + 2 * 4096 * 14336), (_block(256, 768), _block(4096, 4096 * 4)),
           (2 * 256 + 4 * 256 * 256 + 3 * 256 * 768 + 2, 2 * 4096 + 4 * 4096 ** 2 + 3 * 4096 * 14336 + 2),
           (_block(128, 384), _block(4096, 14336))],
    notes="164,098 per block at our width (the table: (665,096 - 8,704) / 4; 4 blocks are 71% of the 0.92M LM), "
          "655,874 at twice the width (4x: the D^2 and D*F terms dominate); 184.6M at 8B width: the lecture's "
          "'substantial numbers of additional trainable parameters'.",
))
