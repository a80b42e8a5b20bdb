"""A 6x6 Othello-like game: predict a legal next move from the moves so far.

The game of Othello-GPT (Li et al. 2023, arXiv 2210.13382) on a 6x6 board: the four centre
squares start filled, a move must flank a line of the opponent's pieces, which flip; a player
without a legal move passes; the game ends when neither can move. Games are played with
uniformly random legal moves. The model sees BOS then the squares played (token = square + 1)
and is trained to spread its next-move probability over the legal moves (at every position);
the board is never shown, so predicting legal moves needs an internal board state.

Prompts for circuit discovery are game prefixes of 16 tokens; the counterfactual is another
random game of the same length. Metric: the mean logit of the legal next moves minus the mean
logit of the other squares (a legality margin). The patch-free dictionary method
(`circuits.discovery.dictionary`, He et al. 2024, arXiv 2402.12201) reads board-state
features off this model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from circuits.tasks.base import Task, TaskBatch, TrainSettings
from circuits.tasks.model import TinyConfig

SIZE = 6
N_SQ = SIZE * SIZE
BOS = 0
PROMPT_LEN = 16
GAME_LEN = 28  # training sequences: BOS + up to 27 moves (shorter games are padded by masking)
DIRS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
EMPTY, BLACK, WHITE = 0, 1, -1


def start_board() -> list[int]:
    b = [EMPTY] * N_SQ
    m = SIZE // 2
    b[(m - 1) * SIZE + m - 1] = b[m * SIZE + m] = WHITE
    b[(m - 1) * SIZE + m] = b[m * SIZE + m - 1] = BLACK
    return b


def _rays(sq: int) -> list[list[int]]:
    r0, c0 = divmod(sq, SIZE)
    out = []
    for dr, dc in DIRS:
        ray, r, c = [], r0 + dr, c0 + dc
        while 0 <= r < SIZE and 0 <= c < SIZE:
            ray.append(r * SIZE + c)
            r, c = r + dr, c + dc
        if len(ray) >= 2:
            out.append(ray)
    return out


RAYS = [_rays(sq) for sq in range(N_SQ)]


def flips(board: list[int], sq: int, player: int) -> list[int]:
    """Squares flipped if `player` plays `sq` (empty list: illegal)."""
    if board[sq] != EMPTY:
        return []
    out = []
    for ray in RAYS[sq]:
        for n, t in enumerate(ray):
            v = board[t]
            if v != -player:
                if v == player and n:
                    out += ray[:n]
                break
    return out


def legal_moves(board: list[int], player: int) -> list[int]:
    return [sq for sq in range(N_SQ) if board[sq] == EMPTY and flips(board, sq, player)]


def random_game(g: random.Random, max_moves: int
                ) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """A random legal game: the moves, the legal moves before each move (and after the last),
    and the board (from the mover's side: +1 the player who just moved) after each move."""
    board, player = start_board(), BLACK
    moves, legal, boards = [], [], []
    while len(moves) < max_moves:
        options = legal_moves(board, player)
        if not options:
            player = -player
            options = legal_moves(board, player)
            if not options:
                break
        legal.append(options)
        sq = options[g.randrange(len(options))]
        for f in flips(board, sq, player) + [sq]:
            board[f] = player
        moves.append(sq)
        boards.append([v * player for v in board])
        player = -player
    nxt = legal_moves(board, player) or legal_moves(board, -player)
    legal.append(nxt)
    return moves, legal, boards


@dataclass
class Othello(Task):
    name: str = "othello"
    description: str = "6x6 Othello: the moves so far -> a legal next move"
    model_cfg: TinyConfig = field(default_factory=lambda: TinyConfig(
        n_layers=2, n_heads=4, d_model=64, d_head=16, d_mlp=256, d_vocab=N_SQ + 1,
        n_ctx=GAME_LEN, act_fn="gelu"))
    train_settings: TrainSettings = field(default_factory=lambda: TrainSettings(
        steps=2500, batch_size=32, lr=3e-3))
    # top-1 legal-move rate; 0.805 measured for this 2-layer model (Othello-GPT's 8 layers on
    # 8x8: ~0.99), asserted with a margin
    accuracy_target: float = 0.7
    planted: tuple[str, ...] = ("a0.h0", "a0.h1", "m0", "a1.h2", "m1")

    def games(self, n: int, seed: int, length: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """[n, length] tokens (BOS + moves; games of at least length - 1 moves), the legal
        next moves after each token [n, length, N_SQ + 1] and the boards after each move
        [n, length, N_SQ] (0 at BOS), plus a mask of the positions inside the game."""
        g = random.Random(seed)
        toks = [[BOS] * length for _ in range(n)]
        legal = [[[False] * (N_SQ + 1) for _ in range(length)] for _ in range(n)]
        boards = [[[0] * N_SQ for _ in range(length)] for _ in range(n)]
        inside = [[False] * length for _ in range(n)]
        i = 0
        while i < n:
            moves, leg, brd = random_game(g, length - 1)
            if len(moves) < min(length - 1, PROMPT_LEN):
                continue  # prompts need a full prefix
            k = len(moves)
            toks[i][1:k + 1] = [m + 1 for m in moves]
            for p in range(k + 1):
                for sq in leg[p]:
                    legal[i][p][sq + 1] = True
                inside[i][p] = True
            inside[i][k] = bool(leg[k])  # the end of a game has nothing to predict
            boards[i][1:k + 1] = brd
            i += 1
        return (torch.tensor(toks), torch.tensor(legal), torch.tensor(boards),
                torch.tensor(inside))

    def batch(self, n: int, seed: int) -> TaskBatch:
        toks, legal, boards, _ = self.games(n, seed, PROMPT_LEN)
        other, _, _, _ = self.games(n, seed + 5_000_000, PROMPT_LEN)
        return TaskBatch(clean=toks, corrupt=other, good=legal[:, -1],
                         extra={"boards": boards})

    def metric(self, logits: Tensor, batch: TaskBatch) -> Tensor:
        """Mean logit of the legal moves minus the mean logit of the other squares."""
        legal = batch.good.to(logits.dtype)
        other = 1 - legal
        other[..., BOS] = 0
        return ((logits * legal).sum(-1) / legal.sum(-1).clamp_min(1)
                - (logits * other).sum(-1) / other.sum(-1).clamp_min(1))

    def correct(self, logits: Tensor, batch: TaskBatch) -> Tensor:
        return batch.good.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1)

    pool_size: int = 4096

    def prepare(self) -> None:
        """Play the pool of training games once (the trainer samples its batches from it)."""
        self._pool = self.games(self.pool_size, self.train_settings.seed + 99, GAME_LEN)

    def train_batch(self, n: int, seed: int):
        """Pool games (the counterfactual of each: the next game of the batch); `good` holds the
        legal moves at every position and `answer` marks the positions inside a game (the
        loss ignores the rest)."""
        if not hasattr(self, "_pool"):
            self.prepare()
        toks, legal, _, inside = self._pool
        idx = torch.randint(len(toks), (n,), generator=torch.Generator().manual_seed(seed))
        games = toks[idx]
        return games, TaskBatch(clean=games, corrupt=games.roll(1, 0), good=legal[idx],
                                answer=inside[idx].long())

    def train_loss(self, logits: Tensor, tokens: Tensor, batch: TaskBatch) -> Tensor:
        """Cross-entropy against the uniform distribution over legal moves, every position."""
        if batch.good.ndim == 2:  # a prompt batch: the last position only
            target, keep = batch.good.float(), torch.ones(len(tokens), dtype=torch.bool)
            logp = F.log_softmax(logits[:, -1], -1)
        else:
            target, keep = batch.good.float(), batch.answer.bool()
            logp = F.log_softmax(logits, -1)
        target = target / target.sum(-1, keepdim=True).clamp_min(1)
        return -((target * logp).sum(-1)[keep]).mean()

    def token_names(self) -> list[str]:
        return ["<bos>"] + [f"{chr(65 + s % SIZE)}{s // SIZE + 1}" for s in range(N_SQ)]


TASK = Othello()
