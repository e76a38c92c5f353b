"""The Augmented Reality Microscope (ARM; Chen et al., Google 2018) as a real-time loop: frames from a video
file, a camera or a simulated microscope panning and zooming over a slide (deepflows.imaging.arm.sources) go
through a segmenter, and the contours of what it finds are drawn over the very frame they were found in
(deepflows.imaging.arm.loop), then shown, streamed to a browser and recorded (deepflows.imaging.arm.sinks).

A segmenter is any callable `segmenter(frame: uint8 [H, W, 3] RGB) -> float32 [H, W]`, the probability of the
target class per pixel: the trained DeepLab (deepflows.imaging.segment) or the built-in classical one
(deepflows.imaging.arm.classical).
"""
