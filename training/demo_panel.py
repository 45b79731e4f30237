"""The notebook's interactive panel: type a prompt, pick the pipeline and the sampler, press a button.

    panel = DemoPanel(conditioner, {"text decoder": decoder, "prior -> image decoder": (prior, image_decoder), "cascade": cascade})
    display(panel.widget())     # a prompt box, guidance, steps, sampler, seed and pipeline; "Draw" shows a grid and the trajectory
    panel.draw("six")           # the same, without widgets: returns the two figures

Every pipeline draws through the package's own ``generate``; the trajectory is the sampler's
callback (x_t and its x0 prediction at every step) for the first image.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from matplotlib.figure import Figure

from models.conditioning import Conditioning
from models.pipeline import ClipConditioner, Decoder
from models.prior import PRIOR_SAMPLING, Prior
from models.samplers import SAMPLERS, SamplingOptions
from models.superres import Cascade
from utils.errors import UserError
from utils.plotting import grid_figure

Pipeline = Decoder | Cascade | tuple[Prior, Decoder]  # a text decoder, a cascade, or a prior with its image decoder


class DemoPanel:
    def __init__(self, conditioner: ClipConditioner, pipelines: dict[str, Pipeline], num_samples: int = 16) -> None:
        self.conditioner, self.pipelines, self.num_samples = conditioner, pipelines, num_samples

    def generate(self, prompt: str, pipeline: str, sampling: SamplingOptions, callback=None) -> torch.Tensor:
        """``num_samples`` images [N, C, H, W] in [-1, 1] for one prompt."""
        self.conditioner.check_prompts([prompt])
        cond = self.conditioner.text([prompt] * self.num_samples)
        chosen = self.pipelines[pipeline]
        if isinstance(chosen, tuple):  # prompt -> prior -> CLIP image embedding -> image decoder
            prior, chosen = chosen
            cond = Conditioning(prior.sample(cond, replace(PRIOR_SAMPLING, seed=sampling.seed)))
        return chosen.generate(cond, sampling, callback=callback)

    def own_guidance(self, pipeline: str) -> float:
        """The guidance scale the pipeline's decoder samples at unless told (its file's, else the default)."""
        chosen = self.pipelines[pipeline]
        return (chosen[1] if isinstance(chosen, tuple) else chosen).guidance_scale

    def draw(self, prompt: str, pipeline: str | None = None, guidance_scale: float | None = None, steps: int = 20,
             sampler: str = "dpmpp_2m", seed: int = 0) -> tuple[Figure, Figure]:
        """The grid of samples, and the first sample's x_t / x0 prediction at (up to) eight of the sampler's steps;
        ``guidance_scale`` None: the pipeline's own."""
        pipeline = pipeline or next(iter(self.pipelines))
        guidance_scale = self.own_guidance(pipeline) if guidance_scale is None else guidance_scale
        trajectory: list[tuple[int, torch.Tensor, torch.Tensor]] = []

        def record(t: int, x_t: torch.Tensor, x0: torch.Tensor) -> None:
            if not trajectory or trajectory[-1][0] > t:  # the base stage of a cascade only
                trajectory.append((t, x_t[0].float().cpu(), x0[0].float().cpu()))

        sampling = SamplingOptions(sampler, steps, guidance_scale, seed=seed)
        images = self.generate(prompt, pipeline, sampling, record)
        title = f'"{prompt}": {pipeline}, {sampler} {steps} steps, guidance {guidance_scale:g}, seed {seed}'
        grid = grid_figure(images, min(self.num_samples, 8), title=title, scale=1.0)
        shown = [trajectory[round(i * (len(trajectory) - 1) / 7)] for i in range(8)] if len(trajectory) >= 8 else trajectory
        frames = torch.stack([x for _, x, _ in shown] + [x0 for _, _, x0 in shown])  # [2K, C, h, w]
        labels = ["x_t", "x0 predicted"]
        steps_shown = ", ".join(str(t) for t, _, _ in shown)
        path = grid_figure(frames.clamp(-1, 1), len(shown), row_labels=labels, title=f"trajectory of the first image, t = {steps_shown}", scale=1.4)
        return grid, path

    def widget(self):
        """The panel as ipywidgets: the controls, a Draw button, and an output area the figures go to."""
        import ipywidgets as widgets
        from IPython.display import display

        prompt = widgets.Text(value="six", description="prompt")
        pipeline = widgets.Dropdown(options=list(self.pipelines), description="pipeline")
        guidance = widgets.FloatSlider(value=self.own_guidance(pipeline.value), min=1.0, max=5.0, step=0.1, description="guidance")
        pipeline.observe(lambda change: setattr(guidance, "value", self.own_guidance(change["new"])), names="value")  # each its own scale
        steps = widgets.IntSlider(value=20, min=2, max=100, description="steps")
        sampler = widgets.Dropdown(options=list(SAMPLERS), value="dpmpp_2m", description="sampler")
        seed = widgets.IntText(value=0, description="seed")
        button = widgets.Button(description="Draw", button_style="primary")
        output = widgets.Output()

        def on_click(_) -> None:
            output.clear_output(wait=True)
            with output:
                try:
                    for figure in self.draw(prompt.value, pipeline.value, guidance.value, steps.value, sampler.value, seed.value):
                        display(figure)
                except UserError as err:
                    print(f"error: {err}")

        button.on_click(on_click)
        controls = widgets.VBox([prompt, pipeline, widgets.HBox([guidance, steps]), widgets.HBox([sampler, seed]), button])
        return widgets.VBox([controls, output])
