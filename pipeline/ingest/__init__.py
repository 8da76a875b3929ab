"""Data in: dataset adapters and the manifest (:mod:`.datasets`), the embedded demo (:mod:`.demo`), video
decoding (:mod:`.video`), face detection and tracking (:mod:`.faces`), cropping into windows
(:mod:`.cropping`; the hash of its settings: :mod:`.crop_settings`) and the reader of those windows
(:mod:`.clips`)."""
