"""The `[minhash]` config section: what text, which shingles, which signature, which targets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ...config import Section


class MinhashConfig(Section):
    columns: list[str] = Field(["instruction", "input", "output"], min_length=1,
                               description="text columns joined (newline) into the dedup text")
    unit: Literal["word", "char"] = Field("word", description="word n-grams, or character n-grams for CJK / unsegmented text")
    ngram: int = Field(5, ge=1, le=64, description="shingle size in units")
    fold_punctuation: bool = Field(True, description="treat Unicode punctuation as a separator (always: whitespace, controls)")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations")
    seed: int = Field(1, ge=0, description="MinHash permutation seed (datasketch's `seed`; part of the signature format, not run randomness)")
    hash: Literal["fast", "datasketch"] = Field(
        "fast", description="shingle hash: fast (FNV/murmur, ~4x cheaper) or datasketch (sha1_hash32, bit-identical to datasketch's default)")
    threshold: float = Field(0.7, gt=0, lt=1, description="Jaccard similarity at or above which a row is a near-duplicate")
    recall_at_threshold: float = Field(0.95, gt=0, lt=1, description="least candidate probability for a pair exactly at the threshold")
    bands: int | None = Field(None, ge=1, description="override the chosen bands (with rows_per_band)")
    rows_per_band: int | None = Field(None, ge=1, description="override the chosen rows per band (with bands)")
    verify: Literal["exact", "estimate"] = Field(
        "exact", description="check candidates by exact shingle Jaccard, or by the full-signature estimate")
    cluster: Literal["leader", "component"] = Field(
        "leader", description="leader: remove a row only if it is a verified near-duplicate of a kept row; "
                              "component: keep one row per union-find component")
    keep_by: list[Literal["score", "length", "id"]] = Field(
        ["score", "length", "id"], description="which row a cluster keeps: highest score, longest output, smallest id (in this order)")
    score_column: str = Field("score", description="column used by keep_by 'score' (ignored when absent or all null)")
    shard_rows: int = Field(50_000, ge=1, description="rows per block (the unit of every phase and of restart) and per output shard")
    workers: int = Field(2, ge=1, le=64, description="processes for the per-block phases")
    keep_work: bool = Field(False, description="keep the phase files (_work/) after the manifest is written")
    against: list[str] = Field(default_factory=list, description="published datasets (with stored signatures) to dedup against")
    add_to_against: bool = Field(False, description="register this output's signatures in the first --against dataset's store")

    @field_validator("keep_by")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("keep_by lists a key twice")
        return v

    @model_validator(mode="after")
    def _bands_pair(self) -> "MinhashConfig":
        if (self.bands is None) != (self.rows_per_band is None):
            raise ValueError("set both bands and rows_per_band, or neither")
        if self.bands is not None and self.bands * self.rows_per_band > self.num_perm:
            raise ValueError(f"bands x rows_per_band = {self.bands * self.rows_per_band} exceeds num_perm = {self.num_perm}")
        if self.add_to_against and not self.against:
            raise ValueError("add_to_against needs an against dataset")
        return self

    def signature_format(self) -> dict:
        """What must match for two signatures to be comparable (checked for --against)."""
        return {"columns": self.columns, "unit": self.unit, "ngram": self.ngram,
                "fold_punctuation": self.fold_punctuation, "num_perm": self.num_perm,
                "seed": self.seed, "hash": self.hash}
