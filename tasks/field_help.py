"""One sentence per parameter that several endpoints share (what it does, its usual value, where it makes sense):
shown under the control, in the MCP tool description and in docs/api.md. A field's own ``info`` takes precedence;
guidance parameters carry theirs in the registry (``RuleParam.info``).
"""

from __future__ import annotations

FIELD_HELP: dict[str, str] = {
    # prompts and guidance
    "prompt": "The text the model is conditioned on (the conditional branch c); in the toy profile a shapes-world "
              "caption such as \"a red circle\" or \"a blue square on the left and a yellow circle\".",
    "negative_prompt": "Text for the unconditional branch u that guidance pushes away from; empty (the usual "
                       "choice) is the empty prompt's embedding.",
    "guidance": "How the predictions of each step are combined: cfg (Ho & Salimans 2022) is the usual choice, none "
                "draws the conditional prediction alone, and docs/methods.md describes every other method.",
    "scale": "Guidance strength w: 0 is the unconditional prediction, 1 the conditional one alone, larger pushes "
             "harder along c − u (SD uses 7.5, DiT 4; about 1–15 makes sense, and cfg++ takes λ in [0, 1]).",
    # sampling
    "steps": "Denoising steps, each one model call per branch: 20–50 suits DDIM-type samplers (25 here), while the "
             "ancestral DDPM sampler of the 2D tabs uses hundreds.",
    "width": "Image width in pixels, a multiple of 8; the default is the model's native size (512 for SD 1.5, 32 "
             "for the toy) and width × height may not exceed the profile's max_pixels.",
    "height": "Image height in pixels, a multiple of 8; the default is the model's native size (512 for SD 1.5, 32 "
              "for the toy) and width × height may not exceed the profile's max_pixels.",
    "seed": "The noise seed: the same seed and parameters give the same image on CPU and GPU, and −1 draws a random "
            "seed (the one used is returned).",
    "scheduler": "The diffusers scheduler that turns each guided prediction into the next sample: ddim (default, "
                 "deterministic at ddim_eta 0), euler, euler-a (ancestral), dpm++2m, unipc or ddpm.",
    "num_images": "How many images to draw in one batch from the seed, up to the profile's max_images; each adds "
                  "the same model work again.",
    "sampler": "ddpm: ancestral steps that add fresh noise at every step; ddim: deterministic DDIM steps (η = 0), "
               "the same noise always giving the same sample.",
    # text to image and the sweep
    "attention_token": "A word of the prompt whose cross-attention map (mean over heads, layers and steps) is "
                       "overlaid on the images; empty turns the map off.",
    "methods": "Comma-separated guidance methods of the registry, one grid row each (at most 6), e.g. \"cfg, "
               "perp-cfg\"; methods that share the unconditional branch run as one batch.",
    "scales": "Comma-separated guidance scales, one grid column each (at most 8), e.g. \"1, 3, 7.5, 12, 20\".",
    # ControlNet
    "image": "The input image: ControlNet reads its canny, depth or pose map (or the image itself with preprocess "
             "off), CLIP image conditioning its CLIP embedding; PNG, JPEG or WebP.",
    "image_b": "The second ControlNet's image; empty uses the first image again.",
    "control": "Which ControlNet steers: canny (OpenCV edges, no annotator weights), depth (MiDaS) or pose "
               "(OpenPose); the toy profile has canny only.",
    "control_a": "Which ControlNet reads the first image: canny, depth or pose.",
    "control_b": "Which ControlNet reads the second image (or the first again): canny, depth or pose.",
    "preprocess": "On: the control's annotator computes the map from the image; off: the image already is the map "
                  "and goes to the ControlNet as it is.",
    "low_threshold": "Canny's lower hysteresis threshold on the gradient (0–255): lower keeps fainter edges; "
                     "ControlNet v1.1's canny model was trained with thresholds around 100 and 200.",
    "high_threshold": "Canny's upper hysteresis threshold on the gradient (0–255): an edge must pass it somewhere to "
                      "be kept; 200 with a lower threshold of 100 is the usual pair.",
    "preprocess_resolution": "The side in pixels at which the depth and pose annotators read the image (512 by "
                             "default); canny works at the output size.",
    "conditioning_scale": "Multiplies the ControlNet's residuals before they join the UNet: 1 as trained, 0 switches "
                          "it off, and about 0.5–1.5 is the useful range.",
    "guidance_start": "Fraction of the steps at which the ControlNet starts acting (0 = from the first step); later "
                      "starts leave the layout to the prompt.",
    "guidance_end": "Fraction of the steps after which the ControlNet stops acting (1 = to the end); stopping early "
                    "keeps the map's layout and frees the details.",
    "conditioning_scale_a": "ControlNet A's residual multiplier: 1 as trained, 0 off, about 0.5–1.5 useful.",
    "guidance_start_a": "Fraction of the steps at which ControlNet A starts acting (0 = from the first step).",
    "guidance_end_a": "Fraction of the steps after which ControlNet A stops acting (1 = to the end).",
    "conditioning_scale_b": "ControlNet B's residual multiplier: 1 as trained, 0 off, about 0.5–1.5 useful.",
    "guidance_start_b": "Fraction of the steps at which ControlNet B starts acting (0 = from the first step).",
    "guidance_end_b": "Fraction of the steps after which ControlNet B stops acting (1 = to the end).",
    "pose_hands": "Pose: also detect hand keypoints (OpenPose's hand model) and draw them into the map.",
    "pose_face": "Pose: also detect face keypoints (OpenPose's face model) and draw them into the map.",
    "latent_size": "Side of the random latent a fresh ControlNetModel.from_unet is measured on (8 by default); the "
                   "zero residual does not depend on it.",
    # classes, classifier guidance and class-conditional CFG
    "class_name": "The class to draw, by name: an ImageNet class (type to search) on real models, a colour and "
                  "shape such as \"red circle\" in the toy world; unknown names get the closest suggestions.",
    "class_id": "The class by index instead of by name; −1 (the default) uses class_name.",
    "classifier_scale": "Classifier guidance strength s, the factor on ∇ log p(y | x_t): 0 is unguided, and the "
                        "default is the ADM paper's (1 with its conditional model, 10 with the unconditional one).",
    "compare_clean": "Also guide the same seed with a classifier trained on clean images only (applied to the "
                     "predicted x̂0), which shows why the classifier must see noisy inputs.",
    "cfg_scale": "The DiT's classifier-free guidance scale w: 1 is the class-conditional model alone, and the DiT "
                 "paper shows its samples at 4.",
    # CLIP image conditioning
    "mode": "variations: the image's CLIP embedding alone; ip-adapter: that embedding beside a text prompt; "
            "cross-modal: a CLIP text embedding (or a mix with the image's) in the image model's slot.",
    "image_scale": "IP-Adapter's weight on the image prompt (0 = plain text-to-image, 1 = as trained); 0.6 by "
                   "default, lower lets the text lead.",
    "mix": "Cross-modal: the spherical interpolation between the image's CLIP embedding (0) and the prompt's CLIP "
           "text embedding (1).",
    # the 2D tabs
    "target_class": "The mixture class the 2D samples are guided towards (its red, green or blue components).",
    "num_samples": "How many 2D points to draw: more gives steadier statistics and costs proportionally more.",
    "p_uncond": "The label dropout the network was trained with: 0 never trains the unconditional branch, 1 never "
                "the conditional one, and 0.05–0.2 works (the papers use 0.1–0.2).",
    "training_seed": "Which of the three networks trained with this p_uncond (seeds 0–2 share data and initial "
                     "weights across p).",
    # attention cost
    "resolutions": "Image sides in pixels, comma separated, e.g. \"256, 512, 1024\": each gives its per-layer costs "
                   "and a point on the log–log plot.",
    "measure": "Also run the largest self- and cross-attention layer at each size through materialised and fused "
               "(SDPA) attention, timing it and measuring its peak memory where it fits.",
    # AdaLN-zero
    "heads": "Attention heads of the test DiT block; its width D is heads × head_dim (4 × 16 by default).",
    "head_dim": "Channels per attention head; the block's width D is heads × head_dim (16 by default).",
    "tokens": "Tokens per sample of the random input (a batch of 4 samples), 16 by default.",
    "sgd_steps": "SGD steps to follow both initialisations for; 10 (the default) shows the gates opening.",
    "lr": "The SGD learning rate, 5 by default: large because the loss is a mean over channels.",
}
