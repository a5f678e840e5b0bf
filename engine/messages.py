"""Every text the engine can put in front of a user: validation refusals and why a job ended.

Adapters show these through `bots.messages.invalid_request`; they name the bad value so that a user can fix it.
"""

from __future__ import annotations

EMPTY = "{what} must not be empty"
TOO_LONG = "{what} is too long: {length} characters, the limit is {limit}"
ASPECT_FORMAT = "aspect must look like W:H (e.g. 16:9), got {aspect}"
ASPECT_ZERO = "aspect sides must be greater than 0, got {aspect}"
ASPECT_RANGE = "aspect must be between 1:4 and 4:1, got {aspect}"
SEED_RANGE = "seed must be between 0 and {max_seed}, got {seed}"
STEPS_RANGE = "steps must be between 1 and {max_steps}, got {steps}"
IMAGE_COUNT_RANGE = "number of images must be between 1 and {max_images}, got {count}"
SIDE = "{name} must be a multiple of 8 between 64 and {max_side}, got {value}"
GUIDANCE_RANGE = "guidance must be between 0 and {max_guidance:g}, got {guidance:g}"
VARIATION_STRENGTH = "variation strength must be between 0 and 1, got {strength}"
IMAGE_STRENGTH = "strength must be between {low:g} and {high:g}, got {strength}"
IMAGE_FORMAT = "the image must be a JPEG, PNG or WebP picture, and that file is none of these"
IMAGE_UNREADABLE = "the image looks like a {format} file but could not be read (damaged or incomplete)"
IMAGE_TOO_MANY_BYTES = "the image is too large: the limit is {limit}"
IMAGE_TOO_MANY_PIXELS = "the image has too many pixels: the limit is {limit}"

NOT_RUNNING = "the engine is not taking new work right now"
NOT_STARTED = "the engine has not been started"
QUEUE_FULL = "the queue is full ({size} jobs)"
NOT_YOURS = "only the person who asked for these images can cancel them"
CANCELLED = "cancelled by request"
RESTARTING = "the service is restarting; the job will resume when it is back"
TIMED_OUT = "the job ran past its {limit:g} s limit"
INTERNAL_ERROR = "an internal error stopped the job"
GENERATION_FAILED = "generation failed: {error}"
POSTPROCESS_FAILED = "post-processing failed: {error}"
INPUT_IMAGE_GONE = "the input image of this job could not be read any more"
OUT_OF_MEMORY = "not enough memory to render even one image at this size"
QUEUE_UNAVAILABLE = "the job queue is unreachable right now ({error}); nothing was queued, try again shortly"
DEAD_LETTER = "this job stopped {count} workers in a row; it was set aside for the operators to look at"
