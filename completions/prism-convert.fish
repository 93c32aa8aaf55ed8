complete -c prism-convert -s o -l output-dir -d 'Folder for the .nii.gz and .json files (created if missing)' -r -F
complete -c prism-convert -l template -d 'Output file name without extension. Placeholders: {series_number}, {description}, {id} (the series id), {series_uid}; other characters must be letters, digits, \'.\', \'-\' or \'_\'' -r
complete -c prism-convert -l overwrite -d 'Replace output files that exist already (default: fail that series)'
complete -c prism-convert -l list -d 'Print the series found (id, description, files, dimensions, orientation) without converting'
complete -c prism-convert -l keep-going -d 'Continue after a series fails; the exit status is then 1 if any failed'
complete -c prism-convert -s q -l quiet -d 'Print only errors on standard error (no progress, no summary)'
complete -c prism-convert -l allow-nonuniform -d 'Resample series with uneven slice spacing or missing slices onto evenly spaced slices (linear interpolation) instead of failing'
complete -c prism-convert -l include-patient -d 'Write patient-identifying attributes (PatientName, PatientID, PatientBirthDate, PatientSex, PatientAge, PatientWeight) into the sidecars'
complete -c prism-convert -s h -l help -d 'Print help (see more with \'--help\')'
complete -c prism-convert -s V -l version -d 'Print version'
