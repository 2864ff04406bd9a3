; Inno Setup 6.3+ script: the Windows installer around PyInstaller's vpdesk folder.
; installers/build.py runs it on Windows when ISCC.exe is found, as
;   ISCC /DAppVersion=0.1.0 /DSourceDir=...\dist\vpdesk /DOutputDir=...\dist vpdesk.iss
; (docs/installing.md). Relative paths are from this file's folder.

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef SourceDir
  #define SourceDir "..\..\dist\vpdesk"
#endif
#ifndef OutputDir
  #define OutputDir "..\..\dist"
#endif

[Setup]
; The AppId identifies vpdesk across versions (upgrades, uninstall): never change it.
AppId={{D29A8F71-9E10-4230-979E-788F241002FB}
AppName=vpdesk
AppVersion={#AppVersion}
AppVerName=vpdesk {#AppVersion}
AppPublisher=vpdesk
DefaultDirName={autopf}\vpdesk
DefaultGroupName=vpdesk
DisableProgramGroupPage=yes
; Per-user install without admin rights, or for all users when run as admin.
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir={#OutputDir}
OutputBaseFilename=vpdesk-{#AppVersion}-windows-x64-setup
SetupIconFile=..\icons\vpdesk.ico
UninstallDisplayIcon={app}\vpdesk.exe
Compression=lzma2
SolidCompression=yes
WizardStyle=modern
; The user's settings, site data and logs (%LOCALAPPDATA%\vpdesk) stay on uninstall.

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[InstallDelete]
; An upgrade replaces the bundle's libraries whole: no stale file from the last version.
Type: filesandordirs; Name: "{app}\_internal"

[Icons]
Name: "{autoprograms}\vpdesk"; Filename: "{app}\vpdesk.exe"
Name: "{autodesktop}\vpdesk"; Filename: "{app}\vpdesk.exe"; Tasks: desktopicon

[Run]
; The embedded site listens on the LAN (HTTPS, port 8443) for field users' phones: an
; all-users install lets it through Windows Defender Firewall (a per-user install leaves
; that to Windows' own prompt on first start).
Filename: "{sys}\netsh.exe"; Parameters: "advfirewall firewall add rule name=""vpdesk"" dir=in action=allow program=""{app}\vpdesk.exe"" enable=yes"; Flags: runhidden; Check: IsAdminInstallMode
Filename: "{app}\vpdesk.exe"; Description: "{cm:LaunchProgram,vpdesk}"; Flags: nowait postinstall skipifsilent

[UninstallRun]
Filename: "{sys}\netsh.exe"; Parameters: "advfirewall firewall delete rule name=""vpdesk"" program=""{app}\vpdesk.exe"""; Flags: runhidden; Check: IsAdminInstallMode; RunOnceId: "vpdeskFirewall"
