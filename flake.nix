{
  description = "MusicFS: a music collection as one clean, tag-organized, read-only FUSE tree";

  # nixos-unstable: the workspace needs Rust >= 1.90 (edition 2024), newer
  # than the stable channels ship.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      # FUSE and /proc/self/mountinfo: Linux only.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version;
    in
    {
      packages = forAllSystems (pkgs: rec {
        musicfs = pkgs.rustPlatform.buildRustPackage {
          pname = "musicfs";
          inherit version;
          src = pkgs.lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          # Only the binary: sim/ and tests/ are test crates.
          cargoBuildFlags = [
            "-p"
            "musicfs"
          ];
          # aws-lc-sys (TLS for S3 origins) compiles C with cmake and perl.
          nativeBuildInputs = [
            pkgs.pkg-config
            pkgs.cmake
            pkgs.perl
          ];
          # The tests mount real FUSE file systems through /dev/fuse, which
          # the build sandbox does not have.
          doCheck = false;
          # The systemd units and the mount(8) helper, pointing into the store.
          postInstall = ''
            install -Dm644 dist/musicfs.service dist/musicfs@.service -t $out/lib/systemd/system
            substituteInPlace $out/lib/systemd/system/musicfs.service $out/lib/systemd/system/musicfs@.service \
              --replace-fail /usr/bin/musicfs $out/bin/musicfs \
              --replace-fail /bin/fusermount3 ${pkgs.fuse3}/bin/fusermount3
            substituteInPlace $out/lib/systemd/system/musicfs@.service \
              --replace-fail /bin/mkdir ${pkgs.coreutils}/bin/mkdir
            install -Dm755 dist/mount.musicfs $out/bin/mount.musicfs
            ln -s mount.musicfs $out/bin/mount.fuse.musicfs
            install -Dm644 dist/musicfs.toml $out/share/doc/musicfs/musicfs.toml
          '';
          meta = {
            description = "Mount a music collection as one clean, tag-organized, read-only tree";
            license = with pkgs.lib.licenses; [
              mit
              asl20
            ];
            mainProgram = "musicfs";
            platforms = pkgs.lib.platforms.linux;
          };
        };
        default = musicfs;
      });

      # `nix develop`: what scripts/install-deps installs on Debian.
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.rustc
            pkgs.cargo
            pkgs.clippy
            pkgs.rustfmt
            pkgs.cargo-nextest
            pkgs.pkg-config
            pkgs.cmake
            pkgs.perl
            pkgs.fuse3 # fusermount3
            pkgs.ffmpeg # test libraries, ffprobe
            (pkgs.python3.withPackages (ps: [ ps.mutagen ])) # tests/corpus/make-library.py
            pkgs.openssh # SFTP origin tests
            pkgs.shellcheck # dist/mount.musicfs
          ];
          # rust-analyzer finds the standard library's sources here.
          RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
        };
      });
    };
}
