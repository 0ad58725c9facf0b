# hyperhive's package: hive-c0re, hivectl (and any other binary of the root crate), the
# static units from units/ installed where systemd, D-Bus and systemd-tmpfiles look for a
# package's files, and man pages and completions rendered from the clap definitions.
{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
}:

let
  cargoToml = lib.importTOML ../Cargo.toml;
  # The xtask runs only where the build can execute what it built (not when cross-compiling).
  canRunXtask = stdenv.buildPlatform.canExecute stdenv.hostPlatform;
in
rustPlatform.buildRustPackage {
  pname = "hyperhive";
  inherit (cargoToml.package) version;

  # Only what cargo needs: editing docs, scripts or nix/ does not rebuild the package.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
      ../tests
      ../testhost
      ../xtask
      ../units
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # The xtask is built beside the binaries so that man pages and completions come from the
  # same clap definitions; it is run once in postInstall and not installed.
  cargoBuildFlags = [
    "--package"
    "hyperhive"
    "--package"
    "xtask"
  ];

  nativeBuildInputs = [ installShellFiles ];

  # Only the pure unit tests: the integration tests boot systemd-nspawn containers, which
  # the build sandbox cannot do. The flake's checks.<system>.vm covers the service.
  cargoTestFlags = [ "--lib" ];

  postInstall = ''
    ${lib.optionalString canRunXtask ''
      $out/bin/xtask gen-docs gen
      installManPage gen/man/*
      installShellCompletion \
        --bash gen/completions/bash/* \
        --zsh gen/completions/zsh/* \
        --fish gen/completions/fish/*
    ''}
    rm $out/bin/xtask

    # units/ mirrors the install tree.
    install -Dm644 -t $out/lib/systemd/system units/systemd/system/*
    install -Dm644 -t $out/share/dbus-1/system.d units/dbus-1/system.d/*
    install -Dm644 -t $out/share/dbus-1/system-services units/dbus-1/system-services/*
    install -Dm644 -t $out/lib/tmpfiles.d units/tmpfiles.d/*
    install -Dm644 -t $out/lib/sysusers.d units/sysusers.d/*
    install -Dm644 -t $out/lib/sysctl.d units/sysctl.d/*
    if [ -d units/catalog ]; then
      install -Dm644 -t $out/lib/systemd/catalog units/catalog/*
    fi

    # The unit names the FHS path (as a distribution package would install it); point it at
    # this package instead, and refuse a unit that still names a binary under /usr.
    substituteInPlace $out/lib/systemd/system/hive-c0re.service \
      --replace-fail "ExecStart=/usr/bin/hive-c0re" "ExecStart=$out/bin/hive-c0re" \
      --replace-fail "ExecReload=/usr/bin/hivectl" "ExecReload=$out/bin/hivectl"
    if grep -n '^Exec[A-Za-z]*=[-@:+!]*/usr/' $out/lib/systemd/system/*; then
      echo "a unit above still runs a binary from /usr: rewrite it in nix/package.nix" >&2
      exit 1
    fi
  '';

  meta = {
    inherit (cargoToml.package) description;
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "hivectl";
    platforms = lib.platforms.linux;
  };
}
