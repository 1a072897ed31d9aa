#!/usr/bin/env bash
# Regenerates assets/demo.mp4, the clip `make run` segments: 3 s, 24 frames at 8 fps,
# 480x270, a textured red square and a textured blue disc moving over a textured grey
# background. assets/demo_prompts.json places one prompt on each shape in frame 0:
# the square spans x 60..160, y 70..170 and the disc x 330..420, y 120..210 there.
set -euo pipefail
cd "$(dirname "$0")"
ffmpeg -y -hide_banner -loglevel error \
  -f lavfi -i "nullsrc=s=480x270:r=8:d=3,geq=lum='110+25*sin(X/9)*cos(Y/7)+10*sin((X+Y)/3)':cb=128:cr=128" \
  -f lavfi -i "nullsrc=s=100x100:r=8:d=3,format=rgba,geq=r='205+40*sin(X/4)':g='40+25*cos(Y/5)':b='35':a='255'" \
  -f lavfi -i "nullsrc=s=90x90:r=8:d=3,format=rgba,geq=r='30':g='90+35*sin((X+Y)/5)':b='215':a='if(lte(hypot(X-45,Y-45),44),255,0)'" \
  -filter_complex "[0][1]overlay=x='60+t*50':y='70+15*sin(t*2)'[a];[a][2]overlay=x='330-t*40':y='120-t*15',format=yuv420p" \
  -frames:v 24 -c:v libx264 -preset slow -crf 24 -movflags +faststart demo.mp4
