complete -c prism-embed -s o -l output -d 'Write the CSV to FILE instead of standard output. Rows collect in FILE.partial while running; FILE appears when the run ends with every input done. A rerun skips inputs already in FILE or FILE.partial' -r -F
complete -c prism-embed -l shard -d 'Process only shard I of N (0-based, 0 <= I < N): input number n goes to shard n mod N. Without this option a SLURM job array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN) selects the shard; 0/1 processes every input' -r
complete -c prism-embed -l threads -d 'Number of CPU threads for computation (sets RAYON_NUM_THREADS and CANDLE_NUM_THREADS). Default: RAYON_NUM_THREADS if set, else the number of physical cores for candle\'s kernels and of logical CPUs for rayon' -r
complete -c prism-embed -l device -d 'Compute device: cpu, cuda (GPU 0) or cuda:N (GPU N, 0-based). CUDA needs a binary built with the cuda feature' -r -f
complete -c prism-embed -s w -l weights -d 'PRISM encoder weights: a PRISM checkpoint (.pt), a state dict, or .safetensors; the environment variable PRISM_WEIGHTS gives a default. Without either, the small built-in encoder (feature size 12, pretrained on open brain MRI) is used' -r -F
complete -c prism-embed -l volume -d 'Volume of 4-D inputs to embed (0-based); 3-D inputs ignore it, and a per-input `scan.nii.gz:N` takes precedence' -r
complete -c prism-embed -l preprocess -d 'Preprocessing before the encoder: `prism` (RAS+, resampling to --spacing, foreground crop, intensity normalization, zero padding to a multiple of 32) or `none` (the file\'s voxel array as it is)' -r -f -a "prism\t''
none\t''"
complete -c prism-embed -l spacing -d 'Target voxel spacing in mm for `--preprocess prism`: one value, or three for i,j,k (default 1)' -r
complete -c prism-embed -l clip-percentiles -d 'Clip intensities to these percentiles of the non-zero voxels before the z-score (for example 0.5,99.5); default: z-score only' -r
complete -c prism-embed -l pooling -d 'Stage outputs pooled into the embedding' -r -f -a "last\t'Mean of the last stage output'
multiscale\t'Means of all five stage outputs, concatenated'"
complete -c prism-embed -l roi -d 'Embed in sliding windows of this size in voxels (one edge, or three for i,j,k; multiples of 32) instead of one whole-volume pass' -r
complete -c prism-embed -l overlap -d 'Fraction of each --roi window shared with its neighbour, in [0, 1) (default 0.5)' -r
complete -c prism-embed -l max-voxels -d 'Largest preprocessed volume, in voxels, run in one pass; larger scans are refused unless --roi is given' -r
complete -c prism-embed -l overwrite -d 'Ignore the rows of an earlier run in FILE and FILE.partial and compute every input again'
complete -c prism-embed -l keep-going -d 'Continue after an input fails; the exit status is then 1 if any input failed. Without it the first failure stops the run (rows written so far are kept)'
complete -c prism-embed -s q -l quiet -d 'Print only errors on standard error (no progress, no summary)'
complete -c prism-embed -l with-metadata -d 'Add the columns repetition_time_s, echo_time_s, flip_angle_deg, acquisition_plane and sequence_family after `path`, read from DICOM headers or from the JSON sidecar next to a NIfTI file (scan.nii.gz → scan.json); empty where unknown'
complete -c prism-embed -s h -l help -d 'Print help (see more with \'--help\')'
complete -c prism-embed -s V -l version -d 'Print version'
