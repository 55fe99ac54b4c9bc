; Inno Setup script for the Windows inspection-station installer.
; Build the folder first on Windows:  pyinstaller --noconfirm packaging\station.spec
; then compile this script with Inno Setup 6 (iscc packaging\station.iss). Not buildable on Linux; see docs/station.md.
; The folder carries the demo models (assets\demo_models), icons and judge prompt templates.
#define AppName "maskbench station"
#define AppVersion "0.1.0"

[Setup]
AppId={{5E0B7C1A-3C1E-4C55-9B7F-6A1D2F0C9E41}
AppName={#AppName}
AppVersion={#AppVersion}
DefaultDirName={autopf}\maskbench-station
DefaultGroupName={#AppName}
OutputBaseFilename=maskbench-station-setup-{#AppVersion}
Compression=lzma2
SolidCompression=yes
ArchitecturesInstallIn64BitMode=x64compatible
; User data (projects, logs, settings) lives in %LOCALAPPDATA%\maskbench, never in the install folder.
PrivilegesRequiredOverridesAllowed=dialog
SetupIconFile=..\assets\icons\maskbench.ico
UninstallDisplayIcon={app}\maskbench-station.exe

[Files]
Source: "..\dist\maskbench-station\*"; DestDir: "{app}"; Flags: recursesubdirs ignoreversion

[Icons]
Name: "{group}\{#AppName}"; Filename: "{app}\maskbench-station.exe"
Name: "{group}\{#AppName} self-test"; Filename: "{app}\maskbench-station.exe"; Parameters: "--selftest"

[Run]
Filename: "{app}\maskbench-station.exe"; Parameters: "--selftest"; Description: "Run the self-test"; Flags: postinstall runhidden
